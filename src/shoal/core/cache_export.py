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
          "peers": ["http://10.0.0.5:7000/"]       nodes known to hold it (URLs canonical)
        }
      ]
    }

The document is ``ExportDocument`` and each file an ``ExportedFile``: msgspec structs whose types and
``Meta`` bounds are the rules. An import is all or nothing: the whole document is read into them before
anything is recorded, and the first problem, in the document's order, is reported with the path of the field
(``files[3].size: must be a non-negative integer``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal

import msgspec
from msgspec import Meta
from msgspec.structs import force_setattr

from shoal.core.errors import UsageError
from shoal.core.ids import canonical_url
from shoal.core.messages import whole

VERSION: Final = 1
MAX_FILES = 1_000_000
_LARGEST = (1 << 63) - 1
"""Sizes and times past this the index (SQLite) cannot record, nor Python's float hold exactly."""

Hex64 = Annotated[str, Meta(pattern=whole("[0-9a-fA-F]{64}"))]
FileName = Annotated[str, Meta(min_length=1, max_length=255, pattern=whole(r"(?!\.\.?$(?!\n))[^/\x00]+"))]
"""A plain file name: no slash or NUL, not ``.`` or ``..``, at most 255 characters."""
Size = Annotated[int, Meta(ge=0, le=_LARGEST)]
# The bound also refuses NaN and Infinity, which Python's json reads: the index cannot hold NaN, nor can an
# export write inf as a whole number.
UnixTime = Annotated[float, Meta(ge=0, lt=float(1 << 63))]  # as a float, 2**63 - 1 is 2**63
if TYPE_CHECKING:  # to the type checker, the value a struct keeps
    Urls = tuple[str, ...]
else:  # in the document, null stands for no URLs; __post_init__ keeps ()
    Urls = tuple[str, ...] | None

_PROBLEMS = {
    "name": "must be a file name (no slashes, at most 255 characters)",
    "size": "must be a non-negative integer",
    "sha256": "must be 64 hex digits",
    "id": "must be 64 hex digits (a BLAKE3 digest)",
    "added": "must be a non-negative Unix time",
    "sources": "must be a list of URLs",
    "peers": "must be a list of URLs",
}
"""What a file's field must be, said as the refusal of a bad one says it."""


class _BadUrl(ValueError):
    """A URL of a file's ``sources`` or ``peers`` that does not read; msgspec adds the file's own path."""

    def __init__(self, where: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.where = where


class ExportedFile(msgspec.Struct, frozen=True):
    """One file a node holds. Hex digests are kept lower-case and URLs canonical (core.ids.canonical_url),
    however the document wrote them."""

    digest: Hex64 = msgspec.field(name="id")
    """BLAKE3 hex: the cache id."""
    name: FileName
    size: Size
    sha256: Hex64
    added: UnixTime
    sources: Urls = ()
    peers: Urls = ()

    def __post_init__(self) -> None:
        force_setattr(self, "digest", self.digest.lower())
        force_setattr(self, "sha256", self.sha256.lower())
        for key in ("sources", "peers"):
            urls = []
            for index, url in enumerate(getattr(self, key) or ()):
                try:
                    urls.append(canonical_url(url))
                except UsageError as exc:
                    raise _BadUrl((key, index), str(exc)) from None
            force_setattr(self, key, tuple(urls))

    def to_json(self) -> dict[str, Any]:
        """The file as the document holds it (as JSON reads it back): ``added`` in whole seconds."""
        raw: dict[str, Any] = msgspec.to_builtins(self)
        return {**raw, "added": int(self.added), "sources": list(self.sources), "peers": list(self.peers)}


class ExportDocument(msgspec.Struct, frozen=True, kw_only=True):
    version: Literal[1]
    exported: Annotated[int, Meta(ge=0)] = 0
    """Unix time."""
    node: str = ""
    """The exporting node's piece server, or ""."""
    files: list[ExportedFile]


def export_document(files: Sequence[ExportedFile], *, node: str, now: float) -> dict[str, Any]:
    doc = ExportDocument(version=VERSION, exported=int(now), node=node, files=list(files))
    return {**msgspec.to_builtins(doc), "files": [f.to_json() for f in files]}


def _fail(where: str, problem: str) -> UsageError:
    return UsageError(f"cannot import: {where}: {problem}; nothing was imported")


def parse_export(doc: Any) -> list[ExportedFile]:
    """Validate a whole export document (as JSON reads it); raises UsageError naming the first bad field."""
    files = doc.get("files") if isinstance(doc, Mapping) else None
    if isinstance(files, list) and len(files) > MAX_FILES:  # before reading a million of them
        raise _fail("files", f"more than {MAX_FILES} entries")
    try:
        return msgspec.convert(doc, ExportDocument).files
    except msgspec.ValidationError as exc:
        raise _refusal(exc, doc) from None


_AT = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")
_MISSING = re.compile(r"^Object missing required field `(?P<key>[^`]*)`")


def _path(exc: msgspec.ValidationError) -> tuple[str | int, ...]:
    """Where in the document msgspec's refusal is: the keys and indexes down to the bad value."""
    text = str(exc)
    at = _AT.search(text)
    path: list[str | int] = [s[1] if s[1] is not None else int(s[2]) for s in _STEP.finditer(at["path"] if at else "")]
    if isinstance(exc.__cause__, _BadUrl):
        path.extend(exc.__cause__.where)
    elif missing := _MISSING.match(text):
        path.append(missing["key"])
    return tuple(path)


def _refusal(exc: msgspec.ValidationError, doc: Any) -> UsageError:
    """The import's error for msgspec's refusal: the path of the field and what it must be."""
    path = _path(exc)
    if not path:
        return _fail("document", "must be a JSON object")
    if path[0] == "version":
        return _fail("version", f"unknown version {doc.get('version')!r} (this Shoal reads version {VERSION})")
    if path[0] == "files" and len(path) <= 2:
        return _fail(_dotted(path), "must be a list" if len(path) == 1 else "must be an object")
    if path[0] == "files" and isinstance(exc.__cause__, _BadUrl):
        return _fail(_dotted(path), str(exc.__cause__))
    if path[0] == "files":
        return _fail(_dotted(path[:3]), _PROBLEMS[str(path[2])])  # a list's item: the list is what is wrong
    message = str(exc)
    message = message[: message.rfind(" - at ")] or message
    return _fail(_dotted(path), message[0].lower() + message[1:])


def _dotted(path: Sequence[str | int]) -> str:
    """``("files", 3, "size")`` as ``files[3].size``."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
