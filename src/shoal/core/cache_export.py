"""The cache's export document (``shoal cache export > nodes.json``), version 1, and its validation.

Another node imports it to learn what this node holds and where each file can be fetched::

    {
      "version": 1,
      "exported": 1763700000,                      Unix time
      "node": "http://10.0.0.5:7000",              this node's piece server, or "" (optional)
      "files": [
        {
          "id": "<BLAKE3 hex>",                    the cache id (content digest; checked on fetch)
          "name": "release.tar",
          "size": 1073741824,
          "sha256": "<hex>",
          "added": 1763690000,                     Unix time
          "sources": ["https://origin/release.tar"],
          "peers": ["http://10.0.0.5:7000"]        nodes known to hold it
        }
      ]
    }

An import is all or nothing: the whole document is validated before anything is recorded, and the first
problem is reported with the path of the field (``files[3].size: must be a non-negative integer``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shoal.core.errors import UsageError
from shoal.core.ids import canonical_url

VERSION = 1
MAX_FILES = 1_000_000
_LARGEST = (1 << 63) - 1
"""Sizes and times past this the index (SQLite) cannot record, nor Python's float hold exactly."""
_HEX64 = re.compile(r"^[0-9a-f]{64}\Z")


@dataclass(frozen=True, slots=True)
class ExportedFile:
    digest: str
    """BLAKE3 hex: the cache id."""
    name: str
    size: int
    sha256: str
    added: float
    sources: tuple[str, ...]
    peers: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.digest,
            "name": self.name,
            "size": self.size,
            "sha256": self.sha256,
            "added": int(self.added),
            "sources": list(self.sources),
            "peers": list(self.peers),
        }


def export_document(files: Sequence[ExportedFile], *, node: str, now: float) -> dict[str, Any]:
    return {"version": VERSION, "exported": int(now), "node": node, "files": [f.to_json() for f in files]}


def _fail(where: str, problem: str) -> UsageError:
    return UsageError(f"cannot import: {where}: {problem}; nothing was imported")


def _urls(raw: Any, where: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(u, str) for u in raw):
        raise _fail(where, "must be a list of URLs")
    out = []
    for i, url in enumerate(raw):
        try:
            out.append(canonical_url(url))
        except UsageError as exc:
            raise _fail(f"{where}[{i}]", str(exc)) from None
    return tuple(out)


def _file(raw: Any, where: str) -> ExportedFile:
    if not isinstance(raw, Mapping):
        raise _fail(where, "must be an object")
    name = raw.get("name")
    if not isinstance(name, str) or not name or "/" in name or "\0" in name or name in (".", "..") or len(name) > 255:
        raise _fail(f"{where}.name", "must be a file name (no slashes, at most 255 characters)")
    size = raw.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= _LARGEST:
        raise _fail(f"{where}.size", "must be a non-negative integer")
    sha256 = raw.get("sha256")
    if not isinstance(sha256, str) or not _HEX64.match(sha256.lower()):
        raise _fail(f"{where}.sha256", "must be 64 hex digits")
    digest = raw.get("id")
    if not isinstance(digest, str) or not _HEX64.match(digest.lower()):
        raise _fail(f"{where}.id", "must be 64 hex digits (a BLAKE3 digest)")
    added = raw.get("added")
    # The bound also refuses NaN and Infinity, which Python's json reads: the index cannot hold NaN, nor can an
    # export write inf as a whole number.
    if not isinstance(added, (int, float)) or isinstance(added, bool) or not 0 <= added <= _LARGEST:
        raise _fail(f"{where}.added", "must be a non-negative Unix time")
    sources = _urls(raw.get("sources"), f"{where}.sources")
    peers = _urls(raw.get("peers"), f"{where}.peers")
    return ExportedFile(digest.lower(), name, size, sha256.lower(), float(added), sources, peers)


def parse_export(doc: Any) -> list[ExportedFile]:
    """Validate a whole export document; raises UsageError naming the first bad field."""
    if not isinstance(doc, Mapping):
        raise _fail("document", "must be a JSON object")
    version = doc.get("version")
    if type(version) is not int or version != VERSION:  # not True, nor 1.0
        raise _fail("version", f"unknown version {version!r} (this Shoal reads version {VERSION})")
    files = doc.get("files")
    if not isinstance(files, list):
        raise _fail("files", "must be a list")
    if len(files) > MAX_FILES:
        raise _fail("files", f"more than {MAX_FILES} entries")
    return [_file(raw, f"files[{i}]") for i, raw in enumerate(files)]
