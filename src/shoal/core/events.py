"""What a download's I/O tasks tell its owner (shoal.peer.engine.Download), which hands them to the core.

Events are named for what happened and carry values only: the owner loop is their one reader, and
core.download.DownloadCore the only code that changes the download's state in response.

Events, like the core's actions (core.download_actions), are frozen msgspec Structs rather than frozen
dataclasses, with the same fields, equality, hashing, repr and positional ``match`` patterns: a Struct's
class is built in C, while a frozen dataclass compiles six methods as its module is imported, and every
``shoal get`` imports these modules before its first request to the origin.
"""

from __future__ import annotations

import msgspec

from shoal.core.bitfield import Bitfield
from shoal.core.errors import ShoalError, TrackerUnavailable
from shoal.core.messages import AnnounceResponse


class OriginPiece(msgspec.Struct, frozen=True):
    index: int
    digest: str
    size: int


class PeerPiece(msgspec.Struct, frozen=True):
    peer_id: str
    index: int
    digest: str
    size: int


class RunEnded(msgspec.Struct, frozen=True):
    """A fetch task ended; ``unfetched`` pieces of its run go back to the pool."""

    source: str
    unfetched: tuple[int, ...]
    error: ShoalError | None = None
    corrupt: bool = False
    busy: bool = False
    stale: bool = False
    rate: float = 0.0
    """An origin run that finished whole: the bytes per second it achieved (0 for any other run)."""


class NoRange(msgspec.Struct, frozen=True):
    pass


class Announced(msgspec.Struct, frozen=True):
    reply: AnnounceResponse
    reported: dict[int, str]
    leases: bool = True  # False: sent beside the announcer (a report, a release); its lease list may be older


class TrackerDown(msgspec.Struct, frozen=True):
    error: TrackerUnavailable


class HashesArrived(msgspec.Struct, frozen=True):
    generation: int
    seq: int
    hashes: dict[int, str]
    revoked: tuple[int, ...] = ()


class PeerHas(msgspec.Struct, frozen=True):
    peer_id: str
    have: Bitfield | None
    added: tuple[int, ...] = ()


class PeerGone(msgspec.Struct, frozen=True):
    peer_id: str


class Wake(msgspec.Struct, frozen=True):
    """Nothing happened, but a back-off ended: schedule again."""


Event = (
    OriginPiece | PeerPiece | RunEnded | NoRange | Announced | TrackerDown | HashesArrived | PeerHas | PeerGone | Wake
)
