"""What a download's I/O tasks tell its owner (shoal.peer.engine.Download), which hands them to the core.

Events are named for what happened and carry values only: the owner loop is their one reader, and
core.download.DownloadCore the only code that changes the download's state in response.
"""

from __future__ import annotations

from dataclasses import dataclass

from shoal.core.bitfield import Bitfield
from shoal.core.errors import ShoalError, TrackerUnavailable
from shoal.core.messages import AnnounceResponse


@dataclass(frozen=True, slots=True)
class OriginPiece:
    index: int
    digest: str
    size: int


@dataclass(frozen=True, slots=True)
class PeerPiece:
    peer_id: str
    index: int
    digest: str
    size: int


@dataclass(frozen=True, slots=True)
class RunEnded:
    """A fetch task ended; ``unfetched`` pieces of its run go back to the pool."""

    source: str
    unfetched: tuple[int, ...]
    error: ShoalError | None = None
    corrupt: bool = False
    busy: bool = False
    stale: bool = False
    rate: float = 0.0
    """An origin run that finished whole: the bytes per second it achieved (0 for any other run)."""


@dataclass(frozen=True, slots=True)
class NoRange:
    pass


@dataclass(frozen=True, slots=True)
class Announced:
    reply: AnnounceResponse
    reported: dict[int, str]
    leases: bool = True  # False: sent beside the announcer (a report, a release); its lease list may be older


@dataclass(frozen=True, slots=True)
class TrackerDown:
    error: TrackerUnavailable


@dataclass(frozen=True, slots=True)
class HashesArrived:
    generation: int
    seq: int
    hashes: dict[int, str]
    revoked: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class PeerHas:
    peer_id: str
    have: Bitfield | None
    added: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class PeerGone:
    peer_id: str


@dataclass(frozen=True, slots=True)
class Wake:
    """Nothing happened, but a back-off ended: schedule again."""


Event = (
    OriginPiece | PeerPiece | RunEnded | NoRange | Announced | TrackerDown | HashesArrived | PeerHas | PeerGone | Wake
)
