"""What the download core (core.download) asks its engine to do: values, carried out in the order given."""

from __future__ import annotations

from dataclasses import dataclass

from shoal.core.messages import ScopeBytes
from shoal.core.pieces import Changes


@dataclass(frozen=True, slots=True)
class FetchOrigin:
    run: list[int]


@dataclass(frozen=True, slots=True)
class FetchPeer:
    peer_id: str
    base_url: str
    run: list[int]


@dataclass(frozen=True, slots=True)
class Follow:
    """Start following a peer's have stream."""

    peer_id: str
    base_url: str


@dataclass(frozen=True, slots=True)
class Unfollow:
    peer_id: str


@dataclass(frozen=True, slots=True)
class Carry:
    """Carry out a change to the book on the piece server and the whole-file hashes (core.pieces)."""

    changes: Changes


@dataclass(frozen=True, slots=True)
class WakeAnnouncer:
    news: bool = False
    """Something the tracker must hear at once (a piece hash from the origin, a bad peer, no Range)."""


@dataclass(frozen=True, slots=True)
class WakeHashes:
    pass


@dataclass(frozen=True, slots=True)
class PlanLater:
    """Plan again after ``seconds`` (a back-off ends)."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Release:
    """Give leased pieces back to the tracker after ``delay``, beside the announcer."""

    pieces: tuple[int, ...]
    delay: float


@dataclass(frozen=True, slots=True)
class ReportBeside:
    """Send an announce now, beside the one in flight (an endgame report)."""


@dataclass(frozen=True, slots=True)
class Note:
    """A line for the log."""

    level: int
    text: str


Action = (
    FetchOrigin
    | FetchPeer
    | Follow
    | Unfollow
    | Carry
    | WakeAnnouncer
    | WakeHashes
    | PlanLater
    | Release
    | ReportBeside
    | Note
)


@dataclass(frozen=True, slots=True)
class Ask:
    """What one announce tells the tracker and asks of it (the AnnounceRequest fields of these names)."""

    done: dict[int, str]
    fetching: tuple[int, ...]
    bad_peers: tuple[str, ...]
    want_leases: int
    want_crossings: int
    no_range: bool
    received: ScopeBytes
