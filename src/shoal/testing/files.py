"""Payload files for tests, benchmarks and the demo: random content written in bounded chunks."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

CHUNK = 4 << 20


def write_random_file(path: Path, size: int) -> str:
    """Write ``size`` random bytes to ``path`` without holding them in memory; return their SHA-256 hex."""
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        remaining = size
        while remaining:
            chunk = os.urandom(min(remaining, CHUNK))
            digest.update(chunk)
            f.write(chunk)
            remaining -= len(chunk)
    return digest.hexdigest()


def sha256_file(path: Path) -> str | None:
    """SHA-256 hex of a file, or None when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()
