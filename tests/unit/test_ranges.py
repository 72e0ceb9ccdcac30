"""Range and Content-Range headers over pieces (core.ranges)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.core.errors import ProtocolError
from shoal.core.manifest import Manifest, OriginIdentity
from shoal.core.ranges import parse_content_range, parse_piece_range, range_header

PIECE = 1024
# Ten whole pieces and a short last one of 100 bytes.
M = Manifest(OriginIdentity(10 * PIECE + 100), PIECE)


def test_range_header_is_inclusive() -> None:
    assert range_header(0, 10) == "bytes=0-9"
    assert range_header(1024, 2048) == "bytes=1024-2047"


@given(st.data())
def test_every_piece_run_parses_back(data: st.DataObject) -> None:
    first = data.draw(st.integers(min_value=0, max_value=M.piece_count - 1))
    count = data.draw(st.integers(min_value=1, max_value=M.piece_count - first))
    assert parse_piece_range(range_header(*M.span(first, count)), M) == (first, count)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-1023", (0, 1)),
        (" bytes=1024-4095 ", (1, 3)),
        ("bytes=10240-10339", (10, 1)),
        ("bytes=0-10339", (0, 11)),
    ],
)
def test_piece_ranges(header: str, expected: tuple[int, int]) -> None:
    assert parse_piece_range(header, M) == expected


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "bytes=0-",
        "bytes=-1024",
        "bytes=0-1023,2048-3071",
        "items=0-1023",
        "bytes=1-1024",  # start not on a piece boundary
        "bytes=0-1022",  # ends inside a piece
        "bytes=1024-1023",  # empty
        "bytes=10240-10340",  # past the end of the file
        "bytes=0-99999",
    ],
)
def test_bad_piece_ranges(header: str | None) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_piece_range(header, M)
    assert info.value.field == "range"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes 0-9/100", (0, 10, 100)),
        ("bytes 1024-2047/*", (1024, 2048, None)),
        (" bytes 5-5/6 ", (5, 6, 6)),
    ],
)
def test_content_range(header: str, expected: tuple[int, int, int | None]) -> None:
    assert parse_content_range(header) == expected


@pytest.mark.parametrize("header", [None, "", "bytes */100", "bytes 0-9", "bytes=0-9/100", "bytes a-9/100"])
def test_bad_content_range(header: str | None) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_content_range(header)
    assert info.value.field == "content-range"
