"""What the download core (core.download) asks its engine to do: values, carried out in the order given.

Frozen msgspec Structs, for the reason given in core.events: they are built at import by every ``shoal get``.
"""

from __future__ import annotations

import msgspec

from shoal.core.messages import ScopeBytes
from shoal.core.pieces import Changes


class FetchOrigin(msgspec.Struct, frozen=True):
    run: list[int]


class FetchPeer(msgspec.Struct, frozen=True):
    peer_id: str
    base_url: str
    run: list[int]


class Follow(msgspec.Struct, frozen=True):
    """Start following a peer's have stream."""

    peer_id: str
    base_url: str


class Unfollow(msgspec.Struct, frozen=True):
    peer_id: str


class Carry(msgspec.Struct, frozen=True):
    """Carry out a change to the book on the piece server and the whole-file hashes (core.pieces)."""

    changes: Changes


class WakeAnnouncer(msgspec.Struct, frozen=True):
    news: bool = False
    """Something the tracker must hear at once (a piece hash from the origin, a bad peer, no Range)."""


class WakeHashes(msgspec.Struct, frozen=True):
    pass


class PlanLater(msgspec.Struct, frozen=True):
    """Plan again after ``seconds`` (a back-off ends)."""

    seconds: float


class Release(msgspec.Struct, frozen=True):
    """Give leased pieces back to the tracker after ``delay``, beside the announcer."""

    pieces: tuple[int, ...]
    delay: float


class ReportBeside(msgspec.Struct, frozen=True):
    """Send an announce now, beside the one in flight (an endgame report)."""


class Note(msgspec.Struct, frozen=True):
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


class Ask(msgspec.Struct, frozen=True):
    """What one announce tells the tracker and asks of it (the AnnounceRequest fields of these names)."""

    done: dict[int, str]
    fetching: tuple[int, ...]
    bad_peers: tuple[str, ...]
    want_leases: int
    want_crossings: int
    no_range: bool
    received: ScopeBytes
