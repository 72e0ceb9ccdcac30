"""The piece length rule and piece arithmetic (core.manifest)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.core.manifest import (
    MAX_PIECE_LENGTH,
    MIN_PIECE_LENGTH,
    TARGET_PIECES,
    Manifest,
    OriginIdentity,
    piece_length_for,
)

MiB, GiB = 1 << 20, 1 << 30
lengths = st.integers(min_value=0, max_value=1 << 45)


def manifest(length: int, piece_length: int | None = None) -> Manifest:
    identity = OriginIdentity(length)
    return Manifest(identity, piece_length) if piece_length else Manifest.for_identity(identity)


@pytest.mark.parametrize(
    ("length", "piece"),
    [
        (0, MIN_PIECE_LENGTH),
        (1, MIN_PIECE_LENGTH),
        (64 * MiB, MIN_PIECE_LENGTH),
        (64 * MiB + 1, 512 * 1024),
        (256 * MiB, 1 * MiB),
        (2 * GiB, 8 * MiB),
        (4 * GiB, 16 * MiB),
        (8 * GiB, 16 * MiB),
        (1 << 44, MAX_PIECE_LENGTH),
    ],
)
def test_documented_examples(length: int, piece: int) -> None:
    assert piece_length_for(length) == piece


def test_negative_length_is_refused() -> None:
    with pytest.raises(ValueError):
        piece_length_for(-1)


@given(lengths)
def test_piece_length_rule(length: int) -> None:
    piece = piece_length_for(length)
    assert piece & (piece - 1) == 0, "a power of two"
    assert MIN_PIECE_LENGTH <= piece <= MAX_PIECE_LENGTH
    count = -(-length // piece)
    if length <= MAX_PIECE_LENGTH * TARGET_PIECES:
        assert count <= TARGET_PIECES
    else:
        assert piece == MAX_PIECE_LENGTH
    if piece > MIN_PIECE_LENGTH:
        # The smallest such power: half of it would cut the file into too many pieces.
        assert -(-length // (piece // 2)) > TARGET_PIECES


@given(lengths)
def test_piece_length_grows_with_length(length: int) -> None:
    assert piece_length_for(length) <= piece_length_for(length + 1)


@given(st.integers(min_value=0, max_value=1 << 40), st.sampled_from([1 << k for k in range(10, 25)]))
def test_piece_sizes_tile_the_file(length: int, piece_length: int) -> None:
    m = manifest(length, piece_length)
    assert m.piece_count == -(-length // piece_length)
    if m.piece_count:
        last = m.piece_count - 1
        assert 0 < m.piece_size(last) <= piece_length
        assert m.piece_offset(last) + m.piece_size(last) == length
        assert all(m.piece_size(i) == piece_length for i in (0, last - 1) if 0 <= i < last)
    assert m.span(0, m.piece_count) == (0, length)


@given(st.data())
def test_span_of_a_run(data: st.DataObject) -> None:
    m = manifest(data.draw(st.integers(min_value=1, max_value=1 << 36)))
    first = data.draw(st.integers(min_value=0, max_value=m.piece_count - 1))
    count = data.draw(st.integers(min_value=1, max_value=m.piece_count - first))
    start, end = m.span(first, count)
    assert start == m.piece_offset(first)
    assert end - start == sum(m.piece_size(i) for i in range(first, first + count))
    assert m.span(first, 1) == (start, start + m.piece_size(first))


def test_span_clamps_to_the_end_of_the_file() -> None:
    m = manifest(10 * MIN_PIECE_LENGTH + 5)
    assert m.span(10, 4) == (10 * MIN_PIECE_LENGTH, 10 * MIN_PIECE_LENGTH + 5)


@pytest.mark.parametrize("index", [-1, 11, 100])
def test_piece_size_out_of_range(index: int) -> None:
    with pytest.raises(IndexError):
        manifest(10 * MIN_PIECE_LENGTH + 5).piece_size(index)


def test_empty_file_has_no_pieces() -> None:
    m = manifest(0)
    assert m.piece_count == 0
    with pytest.raises(IndexError):
        m.piece_size(0)


def test_any_validator_difference_is_another_version() -> None:
    base = OriginIdentity(10, '"a"', "Mon")
    assert base.same_version(OriginIdentity(10, '"a"', "Mon"))
    for other in (
        OriginIdentity(11, '"a"', "Mon"),
        OriginIdentity(10, '"b"', "Mon"),
        OriginIdentity(10, '"a"', "Tue"),
    ):
        assert not base.same_version(other)
