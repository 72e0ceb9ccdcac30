"""cloud-manager's dump (core.cloud_manager_dump): its two versions, numbers as strings, and validation that
names the bad entry."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shoal.core.cloud_manager_dump import KnownFile, is_cloud_manager_dump, parse_cloud_manager_dump
from shoal.core.errors import UsageError

SHA = "6e163442e29ec8d7538bc86fe2c4a48778e8ae2254632f0889da753b1c357b1b"


def entry(**overrides: Any) -> dict[str, Any]:
    """One entry as cloud-manager 0.2 writes it (numbers as strings); a value of ``...`` removes the field."""
    raw: dict[str, Any] = {
        "version": "0.2",
        "datetime": "1391212800",
        "filename": "README.md",
        "filesize": "23124",
        "filehash": SHA,
        "uploads": [
            {"host_name": "mediafire", "url": "http://www.mediafire.com/?qorncpzfe74s9"},
            {"host_name": "anonfiles", "error": True},
        ],
    }
    for key, value in overrides.items():
        if value is ...:
            del raw[key]
        else:
            raw[key] = value
    return raw


def test_a_dump_reads_as_files_known_by_sha256() -> None:
    other = "ab" * 32
    doc = json.loads(
        json.dumps(
            [
                entry(),
                entry(version="0.1", filename=..., filehash=other.upper(), filesize=7, datetime=1391212801.5),
                entry(uploads=...),
            ]
        )
    )
    assert is_cloud_manager_dump(doc) and not is_cloud_manager_dump({"version": 1, "files": []})
    assert parse_cloud_manager_dump(doc) == [
        KnownFile(SHA, "README.md", 23124, 1391212800.0),
        KnownFile(other, other[:10], 7, 1391212801.5),  # 0.1 names a file as cloud-manager does
        KnownFile(SHA, "README.md", 23124, 1391212800.0),
    ]
    assert parse_cloud_manager_dump([]) == []


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        (entry(version="0.3"), "[1].version: unknown version '0.3' (Shoal reads cloud-manager's 0.1 and 0.2)"),
        (entry(version=0.2), "[1].version: unknown version 0.2"),
        (entry(filehash=SHA[:-1]), "[1].filehash: must be 64 hex digits (a SHA-256)"),
        (entry(filehash=...), "[1].filehash: is missing"),
        (entry(filename="a/b"), "[1].filename: must be a file name"),
        (entry(filename=".."), "[1].filename: must be a file name"),
        (entry(filename=...), "[1].filename: is missing"),
        (entry(filesize="-1"), "[1].filesize: must be a non-negative integer"),
        (entry(filesize="12.5"), "[1].filesize: must be a non-negative integer"),
        (entry(filesize=True), "[1].filesize: must be a non-negative integer"),
        (entry(filesize=1 << 63), "[1].filesize: must be a non-negative integer"),
        (entry(datetime="yesterday"), "[1].datetime: must be a non-negative Unix time"),
        (entry(datetime=-5), "[1].datetime: must be a non-negative Unix time"),
        (entry(datetime=float("inf")), "[1].datetime: must be a non-negative Unix time"),
        (entry(uploads="mediafire"), "[1].uploads: must be a list"),
        (entry(filesize="1"), "[1].filesize: 1, but [0] lists the same filehash as 23124"),
        ("README.md", "[1]: must be an object"),
    ],
)
def test_the_first_bad_entry_is_named_and_nothing_is_taken(bad: Any, says: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_cloud_manager_dump([entry(), bad, entry(filehash="0" * 64)])
    message = str(info.value)
    assert message.startswith(f"cannot import: {says}") and message.endswith("; nothing was imported"), message


def test_a_document_that_is_no_array_is_refused() -> None:
    with pytest.raises(UsageError, match="must be a JSON array"):
        parse_cloud_manager_dump({"files": []})
