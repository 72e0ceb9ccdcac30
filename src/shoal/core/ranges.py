"""HTTP Range headers (RFC 9110 section 14) as the piece server and the origin fetcher need them."""

from __future__ import annotations

import re

from shoal.core.errors import ProtocolError
from shoal.core.manifest import Manifest

_RANGE = re.compile(r"^bytes=(\d+)-(\d+)$")
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


def range_header(start: int, end: int) -> str:
    """The Range header for bytes [start, end)."""
    return f"bytes={start}-{end - 1}"


def parse_piece_range(header: str | None, manifest: Manifest) -> tuple[int, int]:
    """Parse a single ``bytes=a-b`` range that covers whole pieces; return (first piece, count).

    The piece server only answers piece-aligned ranges: anything else is a client bug and gets a 416.
    """
    if not header:
        raise ProtocolError("a Range header covering whole pieces is required", field="range")
    match = _RANGE.match(header.strip())
    if not match:
        raise ProtocolError(f"unsupported Range {header!r}", field="range")
    start, last = int(match.group(1)), int(match.group(2))
    end = last + 1
    if start >= end or end > manifest.length or start % manifest.piece_length:
        raise ProtocolError(f"Range {header!r} is not piece-aligned", field="range")
    first = start // manifest.piece_length
    count = -(-(end - start) // manifest.piece_length)
    if manifest.span(first, count) != (start, end):
        raise ProtocolError(f"Range {header!r} is not piece-aligned", field="range")
    return first, count


def parse_content_range(header: str | None) -> tuple[int, int, int | None]:
    """Parse ``bytes a-b/total`` into (start, end exclusive, total or None)."""
    match = _CONTENT_RANGE.match((header or "").strip())
    if not match:
        raise ProtocolError(f"malformed Content-Range {header!r}", field="content-range")
    total = None if match.group(3) == "*" else int(match.group(3))
    return int(match.group(1)), int(match.group(2)) + 1, total
