"""Byte quantities and rates as users write them: ``512K``, ``10M``, ``1.5G`` (1024-based).

A unit that is not one of B, K, M, G, T (optionally followed by ``iB``/``B``/``/s``) is an error, never
ignored: ``10Q`` must not quietly become ten bytes per second.
"""

from __future__ import annotations

import re

from shoal.core.errors import UsageError

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)(?:/s)?\s*$")


def parse_size(text: str) -> int:
    """Parse ``10M`` into 10485760. Raises UsageError on anything else."""
    match = _PATTERN.match(text)
    if not match:
        raise UsageError(f"not a size or rate: {text!r} (expected a number and a unit like 512K, 10M, 1G)")
    number, unit = match.groups()
    unit = unit.upper()
    for suffix in ("IB", "B"):
        if len(unit) > 1 and unit.endswith(suffix):
            unit = unit[: -len(suffix)]
            break
    if unit not in _UNITS:
        raise UsageError(f"unknown unit {unit!r} in {text!r} (use B, K, M, G or T; 1024-based)")
    value = int(float(number) * _UNITS[unit])
    return value


def parse_rate(text: str) -> int:
    """A rate in bytes per second; must be positive."""
    value = parse_size(text)
    if value <= 0:
        raise UsageError(f"rate must be positive: {text!r}")
    return value


def format_size(n: int) -> str:
    """``n`` bytes as a size option takes it, in the largest unit that divides it whole: ``20G``, ``512K``,
    ``100`` (what :func:`parse_size` reads back to ``n``), for defaults shown in help texts."""
    for unit in ("T", "G", "M", "K"):
        if n and n % _UNITS[unit] == 0:
            return f"{n // _UNITS[unit]}{unit}"
    return str(n)


def format_bytes(n: float) -> str:
    """Human-readable 1024-based size: ``1.5 MiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")
