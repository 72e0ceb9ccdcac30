"""What a task is: the origin's identity, its length, and how it is cut into pieces.

Piece length rule: the smallest power of two that cuts the file into at most ``TARGET_PIECES`` pieces,
clamped to [256 KiB, 16 MiB]. A file of up to 64 MiB gets 256 KiB pieces, a 256 MiB file 1 MiB pieces, a
2 GiB file 8 MiB pieces. A few hundred pieces still let many peers split the origin work, and each piece
costs the same whatever its size: a request to a peer, a line of each have stream, a report to the tracker
and a look-up of its hash by every other peer, a hop to a worker thread. So fewer, larger pieces spend
less CPU in the peers and the tracker, down to a point: a piece is passed on only once it is whole, and a
larger one takes longer to arrive from the origin, so half as many pieces as TARGET_PIECES made the swarm
slower (benchmarks/swarm_lab.py, in alternating runs; figures in benchmarks/RESULTS.md). Pieces of at most
16 MiB bound the memory a download holds per in-flight piece.

Piece hashes are BLAKE3 (32 bytes): it verifies many times faster than SHA-256 on one core, so
verification never limits a LAN transfer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from msgspec import Meta

MIN_PIECE_LENGTH = 256 * 1024
MAX_PIECE_LENGTH = 16 * 1024 * 1024
TARGET_PIECES = 256
HASH_SIZE = 32
MAX_LENGTH = MAX_PIECE_LENGTH * 65_536
"""1 TiB: at most 65,536 pieces, so a task's bitfield is at most 8 KiB and every per-piece loop of the
tracker stays short. A larger origin file is refused."""


def piece_length_for(length: int) -> int:
    """The piece length for a file of ``length`` bytes (see the module docstring for the rule)."""
    if length < 0:
        raise ValueError("length must not be negative")
    piece = MIN_PIECE_LENGTH
    while piece < MAX_PIECE_LENGTH and piece * TARGET_PIECES < length:
        piece *= 2
    return piece


@dataclass(frozen=True, slots=True)
class OriginIdentity:
    """How the origin describes one version of the file. Any difference means a different file. The
    annotations' bounds are checked where a peer sends one (core.messages): a task holds at most
    MAX_LENGTH bytes, and the validators are header values of bounded length."""

    length: Annotated[int, Meta(ge=0, le=MAX_LENGTH)]
    etag: Annotated[str, Meta(max_length=512)] = ""
    last_modified: Annotated[str, Meta(max_length=128)] = ""

    def same_version(self, other: OriginIdentity) -> bool:
        return self == other


@dataclass(frozen=True, slots=True)
class Manifest:
    """A task's layout: one version of the origin's file, cut into pieces."""

    identity: OriginIdentity
    piece_length: int

    @classmethod
    def for_identity(cls, identity: OriginIdentity) -> Manifest:
        return cls(identity, piece_length_for(identity.length))

    @property
    def length(self) -> int:
        return self.identity.length

    @property
    def piece_count(self) -> int:
        return -(-self.length // self.piece_length)

    def piece_offset(self, index: int) -> int:
        return index * self.piece_length

    def piece_size(self, index: int) -> int:
        if not 0 <= index < self.piece_count:
            raise IndexError(f"piece {index} out of range 0..{self.piece_count - 1}")
        return min(self.piece_length, self.length - index * self.piece_length)

    def span(self, first: int, count: int) -> tuple[int, int]:
        """Byte range [start, end) of ``count`` pieces starting at ``first``."""
        start = first * self.piece_length
        end = min(self.length, (first + count) * self.piece_length)
        return start, end
