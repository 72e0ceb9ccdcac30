"""The labs' torrent for the aria2c swarm: v1 metainfo (BEP 3) of the payload, with the origin as BEP 19 web seed.

benchmarks/labrun.py writes it once per session (its tracker address is the same in every lab); not run on its
own.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from fastbencode import bencode


def torrent_piece_length(size: int) -> int:
    """The smallest power of two from 256 KiB that cuts the file into at most 2048 pieces (mktorrent-like)."""
    piece = 256 * 1024
    while piece * 2048 < size and piece < 16 << 20:
        piece *= 2
    return piece


def make_torrent(payload: Path, announce: str, web_seed: str, piece_length: int) -> bytes:
    """A single-file v1 metainfo (BEP 3) with SHA-1 pieces and a BEP 19 ``url-list`` web seed."""
    pieces = bytearray()
    with open(payload, "rb") as f:
        while chunk := f.read(piece_length):
            pieces += hashlib.sha1(chunk).digest()
    info = {
        b"name": payload.name.encode(),
        b"length": payload.stat().st_size,
        b"piece length": piece_length,
        b"pieces": bytes(pieces),
    }
    return bencode(
        {
            b"announce": announce.encode(),
            b"url-list": [web_seed.encode()],
            b"created by": b"shoal benchmarks/labtorrent.py",
            b"creation date": int(time.time()),
            b"info": info,
        }
    )
