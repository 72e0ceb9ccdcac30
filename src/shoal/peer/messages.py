"""The JSON of every peer's piece server (shoal.peer.piece_http), as msgspec structs.

``PeerHealth`` is encoded with its struct. ``HavesLine`` describes the have stream's lines for the OpenAPI
document only: the server writes them as bytes it encodes once for every watcher (shoal.peer.server), on a
hot path, and their shape is the one this struct states.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

_Bitfield = Annotated[
    str, Meta(description="the pieces held: base64 of a BitTorrent bitfield (piece 0 the first byte's high bit)")
]
_Have = Annotated[list[int], Meta(description="the pieces verified since the last line")]


class PeerHealth(msgspec.Struct, frozen=True):
    """The reply to ``GET /v1/health``."""

    ok: bool
    tasks: int
    """Tasks whose pieces this peer serves."""
    uploads: int
    """Piece responses being sent now."""


class HavesLine(msgspec.Struct, frozen=True, omit_defaults=True):
    """One line of a have stream: exactly one of its fields. The first line is the ``bitfield``; then a
    ``have`` line as pieces are verified, or a ``ping`` after a quiet spell (server.PING_SECONDS)."""

    bitfield: _Bitfield | None = None
    have: _Have | None = None
    ping: bool | None = None
