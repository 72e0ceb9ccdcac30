"""The cache's export document (core.cache_export): round trips, and validation that names the bad field."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.core import cache_export
from shoal.core.cache_export import VERSION, ExportedFile, export_document, parse_export
from shoal.core.errors import UsageError
from shoal.core.ids import canonical_url

DIGEST = "b3" * 32
SHA256 = "5a" * 32
NODE = "http://10.0.0.5:7000/"  # canonical, as the document carries URLs
NOW = 1_763_700_000.75


def exported(**overrides: Any) -> ExportedFile:
    values: dict[str, Any] = {
        "digest": DIGEST,
        "name": "release.tar",
        "size": 1 << 30,
        "sha256": SHA256,
        "added": 1_763_690_000.0,
        "sources": ("https://origin.example/release.tar",),
        "peers": (NODE,),
    }
    values.update(overrides)
    return ExportedFile(**values)


def file_json(**overrides: Any) -> dict[str, Any]:
    """One valid file object of a document; a value of ``...`` removes that field."""
    raw = exported().to_json()
    for key, value in overrides.items():
        if value is ...:
            del raw[key]
        else:
            raw[key] = value
    return raw


def document(*files: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"version": VERSION, "exported": int(NOW), "node": NODE, "files": list(files)}
    for key, value in overrides.items():
        if value is ...:
            del doc[key]
        else:
            doc[key] = value
    return doc


def over_json(doc: Any) -> Any:
    """What the importing node reads: the document as it travels, through JSON."""
    return json.loads(json.dumps(doc))


def rejected(doc: Any) -> str:
    with pytest.raises(UsageError) as info:
        parse_export(doc)
    message = str(info.value)
    assert message.startswith("cannot import: ") and message.endswith("; nothing was imported")
    return message


# -- round trips ---------------------------------------------------------------------------------------


def test_an_exported_document_parses_back_to_the_same_files() -> None:
    files = [
        exported(),
        exported(digest="0f" * 32, name="empty", size=0, sha256="e3" * 32, sources=(), peers=()),
        exported(digest="c4" * 32, name="two sources.iso", sources=("http://a.example/x", "http://b.example:8080/y")),
    ]
    doc = export_document(files, node=NODE, now=NOW)
    assert doc["version"] == VERSION == 1
    assert doc["exported"] == 1_763_700_000  # whole seconds
    assert doc["node"] == NODE
    assert doc["files"][0] == {
        "id": DIGEST,
        "name": "release.tar",
        "size": 1 << 30,
        "sha256": SHA256,
        "added": 1_763_690_000,
        "sources": ["https://origin.example/release.tar"],
        "peers": [NODE],
    }
    assert parse_export(over_json(doc)) == files


def test_an_empty_export_parses_to_no_files() -> None:
    assert parse_export(over_json(export_document([], node="", now=NOW))) == []


def test_added_is_exported_in_whole_seconds() -> None:
    doc = export_document([exported(added=1_763_690_000.9)], node="", now=NOW)
    assert doc["files"][0]["added"] == 1_763_690_000
    assert parse_export(over_json(doc))[0].added == 1_763_690_000.0


def test_parsing_normalises_hex_case_and_urls_and_fills_missing_lists() -> None:
    raw = file_json(
        id=DIGEST.upper(),
        sha256=SHA256.upper(),
        added=12.5,
        sources=["HTTP://Origin.Example:80/release.tar#part"],
        peers=...,
    )
    (parsed,) = parse_export(document(raw))
    assert parsed.digest == DIGEST and parsed.sha256 == SHA256
    assert parsed.added == 12.5
    assert parsed.sources == ("http://origin.example/release.tar",)
    assert parsed.peers == ()
    (no_sources,) = parse_export(document(file_json(sources=None)))
    assert no_sources.sources == ()


def test_fields_the_reader_does_not_know_are_ignored() -> None:
    doc = document(file_json(comment="hello"), comment="from the future", node=...)
    assert parse_export(doc) == [exported()]


# -- rejections ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("doc", [None, [], "{}", 1, [{"version": 1, "files": []}]])
def test_a_document_that_is_not_an_object_is_rejected(doc: Any) -> None:
    assert "document: must be a JSON object" in rejected(doc)


@pytest.mark.parametrize(
    ("version", "shown"),
    [(2, "2"), (0, "0"), ("1", "'1'"), (None, "None"), (True, "True"), (1.0, "1.0"), (..., "None")],
)
def test_an_unknown_version_is_rejected(version: Any, shown: str) -> None:
    message = rejected(document(file_json(), version=version))
    assert f"version: unknown version {shown} (this Shoal reads version 1)" in message


@pytest.mark.parametrize("files", [..., None, {}, {"0": {}}, "[]", 3])
def test_files_must_be_a_list(files: Any) -> None:
    assert "files: must be a list" in rejected(document(files=files))


def test_too_many_files_are_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache_export, "MAX_FILES", 2)
    assert "files: more than 2 entries" in rejected(document(file_json(), file_json(), file_json()))
    assert len(parse_export(document(file_json(), file_json()))) == 2


@pytest.mark.parametrize("raw", [None, [], "file", 7])
def test_a_file_that_is_not_an_object_is_rejected(raw: Any) -> None:
    assert "files[1]: must be an object" in rejected(document(file_json(), raw))


NAME_PROBLEM = "must be a file name (no slashes, at most 255 characters)"
SIZE_PROBLEM = "must be a non-negative integer"
SHA256_PROBLEM = "must be 64 hex digits"
ID_PROBLEM = "must be 64 hex digits (a BLAKE3 digest)"
ADDED_PROBLEM = "must be a non-negative Unix time"
BAD_FIELDS = [
    # name
    ("name", ..., "name", NAME_PROBLEM),
    ("name", None, "name", NAME_PROBLEM),
    ("name", "", "name", NAME_PROBLEM),
    ("name", ".", "name", NAME_PROBLEM),
    ("name", "..", "name", NAME_PROBLEM),
    ("name", "dir/file", "name", NAME_PROBLEM),
    ("name", "/etc/passwd", "name", NAME_PROBLEM),
    ("name", "../up", "name", NAME_PROBLEM),
    ("name", "nul\0byte", "name", NAME_PROBLEM),
    ("name", "x" * 256, "name", NAME_PROBLEM),
    ("name", 12, "name", NAME_PROBLEM),
    # size
    ("size", ..., "size", SIZE_PROBLEM),
    ("size", -1, "size", SIZE_PROBLEM),
    ("size", True, "size", SIZE_PROBLEM),
    ("size", False, "size", SIZE_PROBLEM),
    ("size", 1.0, "size", SIZE_PROBLEM),
    ("size", "100", "size", SIZE_PROBLEM),
    ("size", 1 << 63, "size", SIZE_PROBLEM),  # more than the index (SQLite INTEGER) can hold
    # sha256
    ("sha256", ..., "sha256", SHA256_PROBLEM),
    ("sha256", "", "sha256", SHA256_PROBLEM),
    ("sha256", "ab" * 31 + "a", "sha256", SHA256_PROBLEM),
    ("sha256", "ab" * 33, "sha256", SHA256_PROBLEM),
    ("sha256", "g" * 64, "sha256", SHA256_PROBLEM),
    ("sha256", "sha256:" + SHA256, "sha256", SHA256_PROBLEM),
    ("sha256", SHA256 + "\n", "sha256", SHA256_PROBLEM),
    ("sha256", 5, "sha256", SHA256_PROBLEM),
    # id
    ("id", ..., "id", ID_PROBLEM),
    ("id", None, "id", ID_PROBLEM),
    ("id", "", "id", ID_PROBLEM),
    ("id", "blake3:" + DIGEST, "id", ID_PROBLEM),
    ("id", DIGEST[:-1], "id", ID_PROBLEM),
    ("id", DIGEST[:-1] + "z", "id", ID_PROBLEM),
    ("id", 0, "id", ID_PROBLEM),
    # added
    ("added", ..., "added", ADDED_PROBLEM),
    ("added", -1, "added", ADDED_PROBLEM),
    ("added", -0.5, "added", ADDED_PROBLEM),
    ("added", True, "added", ADDED_PROBLEM),
    ("added", "1763690000", "added", ADDED_PROBLEM),
    ("added", math.inf, "added", ADDED_PROBLEM),
    ("added", math.nan, "added", ADDED_PROBLEM),
    ("added", 10**400, "added", ADDED_PROBLEM),  # more than a float holds
    # sources and peers
    ("sources", "https://origin.example/release.tar", "sources", "must be a list of URLs"),
    ("sources", {"url": "https://origin.example/"}, "sources", "must be a list of URLs"),
    ("sources", ["https://origin.example/", 3], "sources", "must be a list of URLs"),
    ("sources", ["https://origin.example/", "ftp://origin.example/f"], "sources[1]", "malformed URL 'ftp://origin"),
    ("sources", ["origin.example/release.tar"], "sources[0]", "malformed URL"),
    ("sources", ["http:///no-host"], "sources[0]", "malformed URL 'http:///no-host': no host"),
    ("sources", ["http://origin.example:99999/"], "sources[0]", "malformed URL"),
    ("peers", "http://10.0.0.5:7000", "peers", "must be a list of URLs"),
    ("peers", [NODE, "file:///srv/c"], "peers[1]", "malformed URL 'file:///srv/c': only http:// and https://"),
]


@pytest.mark.parametrize(
    ("key", "value", "field", "problem"), BAD_FIELDS, ids=[f"{k}={v!r}"[:40] for k, v, _, _ in BAD_FIELDS]
)
def test_a_bad_field_is_rejected_naming_its_path(key: str, value: Any, field: str, problem: str) -> None:
    doc = document(file_json(), file_json(), file_json(**{key: value}))
    assert f"cannot import: files[2].{field}: {problem}" in rejected(doc)


def test_the_first_bad_file_is_the_one_reported() -> None:
    doc = document(file_json(), file_json(size=-5), file_json(name=".."))
    message = rejected(doc)
    assert "files[1].size" in message and "files[2]" not in message


def test_a_bad_url_is_reported_in_the_documents_order() -> None:
    doc = document(file_json(), file_json(peers=["gopher://x/"]), file_json(size=-5))
    message = rejected(doc)
    assert "files[1].peers[0]: malformed URL 'gopher://x/'" in message and "files[2]" not in message


@pytest.mark.parametrize(("key", "value"), [("exported", -1), ("exported", "now"), ("node", 3)])
def test_the_documents_own_fields_are_checked_too(key: str, value: Any) -> None:
    assert f"cannot import: {key}: expected `" in rejected(document(file_json(), **{key: value}))


def test_a_bad_field_in_json_text_is_rejected_like_any_other() -> None:
    # Python's json module reads NaN and Infinity, which are not JSON but do arrive that way.
    text = json.dumps(document(file_json())).replace('"added": 1763690000', '"added": Infinity')
    assert "files[0].added" in rejected(json.loads(text))


# -- properties ----------------------------------------------------------------------------------------

HEX64 = st.binary(min_size=32, max_size=32).map(bytes.hex)
NAMES = st.text(min_size=1, max_size=255).filter(lambda n: "/" not in n and "\0" not in n and n not in (".", ".."))
URLS = st.builds(
    lambda scheme, host, port, path: canonical_url(f"{scheme}://{host}{port}/{path}"),
    st.sampled_from(["http", "https", "HTTP"]),
    st.sampled_from(["origin.example", "10.0.0.5", "[::1]", "Mirror.Example"]),
    st.sampled_from(["", ":80", ":443", ":7000"]),
    st.text(alphabet="abcxyz019-._~/", max_size=20),
)
FILES = st.builds(
    ExportedFile,
    digest=HEX64,
    name=NAMES,
    size=st.integers(0, (1 << 63) - 1),
    sha256=HEX64,
    added=st.integers(0, 1 << 40).map(float),  # the document carries whole seconds
    sources=st.lists(URLS, max_size=3).map(tuple),
    peers=st.lists(URLS, max_size=3).map(tuple),
)


@given(files=st.lists(FILES, max_size=8), node=st.one_of(st.just(""), URLS), now=st.floats(0, 1e10))
def test_any_document_of_valid_files_parses_back_to_equal_values(
    files: list[ExportedFile], node: str, now: float
) -> None:
    doc = export_document(files, node=node, now=now)
    assert doc["exported"] == int(now)
    assert parse_export(over_json(doc)) == files


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=80),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=8,
)


@given(key=st.sampled_from(sorted(file_json())), value=JSON_VALUES)
def test_any_value_in_any_field_is_accepted_or_rejected_as_a_usage_error(key: str, value: Any) -> None:
    try:
        (parsed,) = parse_export(document(file_json(**{key: value})))
    except UsageError as exc:
        assert re.search(rf"files\[0\]\.{key}(\[\d+\])?: ", str(exc))
        return
    # Whatever is accepted can be exported again as plain JSON, and reads back the same.
    assert math.isfinite(parsed.added) and 0 <= parsed.size < 1 << 63
    again = json.loads(json.dumps(export_document([parsed], node="", now=NOW), allow_nan=False))
    assert parse_export(again) == [msgspec.structs.replace(parsed, added=float(int(parsed.added)))]
