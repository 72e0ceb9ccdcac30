"""cloud-manager's dump (Storj's ``CloudManager.data_dump``), read so a node's catalogue carries over.

The dump is a JSON array with one object per file, as cloud-manager's ``payload.to_dict`` writes it::

    [
      {
        "version": "0.2",                      "0.1" or "0.2" (0.1 has no file name)
        "filename": "README.md",               0.2 only
        "filesize": "23124",                   bytes: a number, or its decimal digits as a string
        "filehash": "<SHA-256 hex>",           the file's id in cloud-manager
        "datetime": "1391212800",              Unix time, as a number or a string
        "uploads": [{"host_name": "mediafire", "url": "http://..."}, {"host_name": "x", "error": true}]
      }
    ]

Rules, and why:

* An entry names its file by SHA-256 only, so Shoal records it as a **known file** (keyed by SHA-256, with
  its name, size and time) and not as a cache entry, whose id is a BLAKE3 no dump can give. It becomes an
  entry when a file with that SHA-256 enters the cache (``put``, or a download with ``--digest sha256:``).
* ``uploads`` are file-locker pages that cloud-manager's plowshare scraped, not URLs of the file's bytes:
  they are checked to be a list and not kept.
* A 0.1 entry is named by its hash's first 10 hex digits, as cloud-manager itself names it.
* All or nothing, like the import of Shoal's own export: the first bad entry, in the dump's order, is
  reported with the path of its field (``[3].filesize: must be a non-negative integer``); one SHA-256
  listed twice with two sizes is refused.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shoal.core.cache_export import MAX_FILES
from shoal.core.errors import UsageError
from shoal.core.messages import whole

VERSIONS = ("0.1", "0.2")
_LARGEST = (1 << 63) - 1
"""Sizes and times past this the index (SQLite) cannot record."""
_HEX64 = re.compile(whole("[0-9a-fA-F]{64}"))
_NAME = re.compile(whole(r"(?!\.\.?$(?!\n))[^/\x00]{1,255}"))
_DECIMAL = re.compile(whole(r"[0-9]{1,19}"))
_TIME = re.compile(whole(r"[0-9]{1,19}(?:\.[0-9]+)?"))


@dataclass(frozen=True, slots=True)
class KnownFile:
    """A file another node holds, known by its SHA-256 only."""

    sha256: str
    """Lower-case hex."""
    name: str
    size: int
    added: float
    """Unix time (the dump's ``datetime``)."""


def is_cloud_manager_dump(doc: Any) -> bool:
    """True for a document of cloud-manager's form (a JSON array); Shoal's own export is an object."""
    return isinstance(doc, list)


def _fail(where: str, problem: str) -> UsageError:
    return UsageError(f"cannot import: {where}: {problem}; nothing was imported")


def parse_cloud_manager_dump(doc: Any) -> list[KnownFile]:
    """Validate a whole cloud-manager dump (as JSON reads it); raises UsageError naming the first bad field."""
    if not isinstance(doc, list):
        raise _fail("document", "must be a JSON array (cloud-manager's dump) or object (Shoal's export)")
    if len(doc) > MAX_FILES:
        raise _fail("document", f"more than {MAX_FILES} entries")
    files: list[KnownFile] = []
    sizes: dict[str, tuple[int, int]] = {}
    for index, item in enumerate(doc):
        known = _entry(index, item)
        first = sizes.setdefault(known.sha256, (index, known.size))
        if first[1] != known.size:
            raise _fail(f"[{index}].filesize", f"{known.size}, but [{first[0]}] lists the same filehash as {first[1]}")
        files.append(known)
    return files


def _entry(index: int, item: Any) -> KnownFile:
    if not isinstance(item, Mapping):
        raise _fail(f"[{index}]", "must be an object")

    def field(key: str) -> Any:
        if key not in item:
            raise _fail(f"[{index}].{key}", "is missing")
        return item[key]

    version = field("version")
    if version not in VERSIONS:
        raise _fail(f"[{index}].version", f"unknown version {version!r} (Shoal reads cloud-manager's 0.1 and 0.2)")
    sha256 = field("filehash")
    if not isinstance(sha256, str) or not _HEX64.match(sha256):
        raise _fail(f"[{index}].filehash", "must be 64 hex digits (a SHA-256)")
    sha256 = sha256.lower()
    name = sha256[:10] if version == "0.1" else field("filename")
    if not isinstance(name, str) or not _NAME.match(name):
        raise _fail(f"[{index}].filename", "must be a file name (no slashes, at most 255 characters)")
    size = _number(field("filesize"), _DECIMAL, int)
    if size is None or size > _LARGEST:
        raise _fail(f"[{index}].filesize", "must be a non-negative integer")
    added = _number(field("datetime"), _TIME, float)
    if added is None or not math.isfinite(added) or added >= float(1 << 63):
        raise _fail(f"[{index}].datetime", "must be a non-negative Unix time")
    if not isinstance(item.get("uploads", []), list):
        raise _fail(f"[{index}].uploads", "must be a list")
    return KnownFile(sha256, name, int(size), float(added))


def _number(value: Any, text: re.Pattern[str], kind: type[int] | type[float]) -> int | float | None:
    """A non-negative number given as a JSON number or as its decimal digits in a string (cloud-manager
    writes both); None when it is neither. JSON's true and false are not numbers here."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        return kind(value) if text.match(value) else None
    if kind is int and isinstance(value, int) and value >= 0:
        return value
    if kind is float and isinstance(value, int | float) and value >= 0:
        return float(value)
    return None
