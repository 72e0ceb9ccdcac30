"""Sizes and rates as users write them (core.units)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.core.errors import UsageError
from shoal.core.units import format_bytes, format_size, parse_rate, parse_size

KiB, MiB, GiB, TiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("17", 17),
        ("17B", 17),
        ("512K", 512 * KiB),
        ("512k", 512 * KiB),
        ("10M", 10 * MiB),
        ("10MB", 10 * MiB),
        ("10MiB", 10 * MiB),
        ("10mib", 10 * MiB),
        ("1.5G", 3 * GiB // 2),
        ("2T", 2 * TiB),
        ("  4 M  ", 4 * MiB),
        ("10M/s", 10 * MiB),
        ("100K/s", 100 * KiB),
    ],
)
def test_parse_size_accepts_1024_based_units(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["10Q", "10Q/s", "5 furlongs", "10KQ", "", "M", "-5M", "1e6", "10M/h", "1,5M", "ten"])
def test_parse_size_rejects_anything_else(text: str) -> None:
    with pytest.raises(UsageError):
        parse_size(text)


def test_unknown_unit_is_named_in_the_error() -> None:
    with pytest.raises(UsageError, match="'Q'"):
        parse_rate("10Q")


@pytest.mark.parametrize("text", ["0", "0K", "0.0001K"])
def test_parse_rate_must_be_positive(text: str) -> None:
    with pytest.raises(UsageError, match="positive"):
        parse_rate(text)


def test_parse_rate_is_bytes_per_second() -> None:
    assert parse_rate("200M/s") == 200 * MiB
    assert parse_rate("1") == 1


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(["", "B", "K", "M", "G", "T"]))
def test_integer_sizes_scale_by_powers_of_1024(number: int, unit: str) -> None:
    scale = {"": 1, "B": 1, "K": KiB, "M": MiB, "G": GiB, "T": TiB}[unit]
    assert parse_size(f"{number}{unit}") == number * scale
    if unit not in ("", "B"):
        assert parse_size(f"{number}{unit}iB") == number * scale
        assert parse_size(f"{number}{unit.lower()}b") == number * scale


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (3 * MiB // 2, "1.5 MiB"),
        (5 * GiB, "5.0 GiB"),
        (2048 * TiB, "2048.0 TiB"),
    ],
)
def test_format_bytes(n: int, text: str) -> None:
    assert format_bytes(n) == text


@pytest.mark.parametrize(
    ("n", "text"),
    [(20 * GiB, "20G"), (512 * KiB, "512K"), (1536 * MiB, "1536M"), (2 * TiB, "2T"), (100, "100"), (0, "0")],
)
def test_format_size_writes_the_largest_whole_unit(n: int, text: str) -> None:
    assert format_size(n) == text


@given(st.integers(min_value=0, max_value=1 << 50))
def test_format_size_reads_back(n: int) -> None:
    assert parse_size(format_size(n)) == n
