"""ServedTask.continues_as: when publishing a task again is the same task going on (its have streams are handed
over, PieceServer.publish) rather than another file (they end). Values only: no server, no event loop."""

from __future__ import annotations

from pathlib import Path

from shoal.core.bitfield import Bitfield
from shoal.core.manifest import Manifest, OriginIdentity
from shoal.peer.server import ServedTask

PIECE = 256 * 1024
MANIFEST = Manifest(OriginIdentity(4 * PIECE), PIECE)


def downloading() -> ServedTask:
    """A download's entry holding pieces 0 and 1 of 4, served from its staging file."""
    return ServedTask("t" * 40, 1, MANIFEST, Path("staging/part"), Bitfield.of(4, [0, 1]), have_gap=0.05)


def test_the_same_generation_with_every_piece_still_held_continues() -> None:
    served = downloading()
    assert served.continues_as(1, Manifest(OriginIdentity(4 * PIECE), PIECE), Bitfield.full(4))
    assert served.continues_as(1, MANIFEST, Bitfield.of(4, [0, 1]))  # no piece more is still the same task


def test_a_piece_fewer_another_generation_or_other_pieces_is_another_file() -> None:
    served = downloading()
    assert not served.continues_as(1, MANIFEST, Bitfield.of(4, [0, 2, 3]))  # piece 1 would vanish unannounced
    assert not served.continues_as(2, MANIFEST, Bitfield.full(4))
    assert not served.continues_as(1, Manifest(OriginIdentity(4 * PIECE), PIECE // 2), Bitfield.full(8))
    assert not served.continues_as(1, Manifest(OriginIdentity(4 * PIECE + 1), PIECE), Bitfield.full(5))


def test_an_entry_whose_streams_ended_continues_nothing() -> None:
    served = downloading()
    served.close_watchers()  # withdrawn: its followers were told the task ended here
    assert not served.continues_as(1, MANIFEST, Bitfield.full(4))
