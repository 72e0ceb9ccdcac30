"""A download's pieces (core.pieces): what each event does to the book, and what the engine must carry out."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shoal.core.manifest import Manifest, OriginIdentity
from shoal.core.pieces import Changes, PieceBook

MANIFEST = Manifest.for_identity(OriginIdentity(16 * 256 * 1024))  # 16 pieces
A, B = "a" * 64, "b" * 64


def book(**hashes: str) -> PieceBook:
    b = PieceBook(MANIFEST)
    b.learn_hashes({int(k[1:]): v for k, v in hashes.items()})
    return b


def test_an_origin_piece_under_lease_is_reported_then_offered_once_the_tracker_takes_it() -> None:
    b = book()
    b.start([3])
    b.fetching.add(3)
    changes = b.origin_piece(3, A, direct=False, refetching=False)
    assert changes.written == [3] and changes.report and changes.serve == []
    assert b.unreported == {3: A} and not b.inflight.mask and not b.fetching and b.sources[3] is None
    confirmed = b.confirm({3: A}, rejected=())
    assert confirmed.serve_at_once == [3] and b.hashes[3] == A and b.unreported == {}


def test_an_origin_piece_the_tracker_refuses_stays_on_disk_unoffered() -> None:
    b = book()
    b.origin_piece(3, A, direct=False, refetching=False)
    changes = b.confirm({3: A}, rejected=(3,))
    assert changes.refused == [3] and changes.want_hashes and changes.serve_at_once == []
    assert 3 in b.withheld and 3 in b.written
    # A look-up shows the tracker's hash is ours after all (another peer fetched the same bytes).
    assert b.hashes_arrived(1, {3: A}, ()).serve == [3] and 3 not in b.withheld


def test_a_refused_origin_piece_leased_to_us_again_is_reported_again_and_offered_once_taken() -> None:
    b = book()
    b.origin_piece(3, A, direct=False, refetching=False)
    b.confirm({3: A}, rejected=(3,))
    assert not b.leased([1, 2]).report and b.unreported == {}  # leases on other pieces: nothing to report
    changes = b.leased([3, 4])
    assert changes.report and b.unreported == {3: A} and b.leases == {3, 4}
    assert not b.leased([3]).report, "reported once"
    assert b.confirm({3: A}, rejected=()).serve_at_once == [3] and not b.withheld and b.hashes[3] == A


def test_a_refused_piece_whose_hash_arrives_is_not_reported_again() -> None:
    b = book()
    b.origin_piece(3, A, direct=False, refetching=False)
    b.confirm({3: A}, rejected=(3,))
    b.hashes_arrived(1, {3: B}, ())  # another lease holder's report differs: ours stays, unserved
    assert not b.leased([3]).report and 3 in b.withheld and b.unreported == {}


def test_origin_pieces_straight_or_of_a_content_task_are_offered_at_once() -> None:
    assert book().origin_piece(0, A, direct=True, refetching=False).serve == [0]
    content = PieceBook(MANIFEST, content_hashes={0: A})
    assert content.origin_piece(0, A, direct=False, refetching=False).serve == [0]
    other = content.origin_piece(1, B, direct=False, refetching=False)
    assert other.restart and 1 not in content.written, "bytes the task's id does not commit to"


def test_a_refetched_origin_piece_is_offered_only_when_the_trackers_hash_agrees() -> None:
    b = book(p0=A, p1=A)
    assert b.origin_piece(0, A, direct=False, refetching=True).serve == [0]
    changes = b.origin_piece(1, B, direct=False, refetching=True)
    assert changes.serve == [] and not changes.report and 1 in b.withheld


def test_a_peer_piece_is_written_only_against_the_hash_held_now() -> None:
    b = book(p5=A)
    b.start([5, 6])
    assert b.peer_piece("x", 5, A).serve == [5] and b.sources[5] == "x"
    stale = b.peer_piece("x", 6, B)  # its hash was revoked while it was written
    assert stale == Changes() and 6 not in b.written and not b.inflight.mask


def test_a_revoked_hash_drops_peer_copies_and_withholds_our_own() -> None:
    b = book(p0=A, p1=A)
    b.peer_piece("x", 0, A)
    b.origin_piece(1, A, direct=False, refetching=False)
    b.confirm({1: A}, ())
    changes = b.revoke((0, 1))
    assert [index for index, _ in changes.dropped] == [0] and changes.unserve == [1]
    assert 0 not in b.written and 1 in b.written and 1 in b.withheld
    assert not b.hashed.mask & 0b11 and b.needed() & 1 and not b.needed() & 2


def test_a_piece_the_tracker_hashes_otherwise_is_dropped_unless_it_is_ours_to_report() -> None:
    b = book(p0=A)
    b.peer_piece("x", 0, A)
    b.origin_piece(1, A, direct=False, refetching=False)  # reported, not answered yet
    changes = b.hashes_arrived(2, {0: B, 1: B}, ())
    assert [index for index, _ in changes.dropped] == [0] and 1 in b.written and b.hash_seq == 2


def test_resumed_pieces_are_reported_in_a_swarm_and_served_straight() -> None:
    swarm, changes = book(), Changes()
    swarm.resume({0: A, 2: B}, changes, direct=False)
    assert changes.written == [0, 2] and changes.serve == []
    assert swarm.unreported == {0: A, 2: B} and swarm.resumed == {0, 2}
    direct, changes = book(), Changes()
    direct.resume({0: A}, changes, direct=True)
    assert changes.serve == [0] and direct.unreported == {}
    assert swarm.done_bytes == 2 * MANIFEST.piece_length


def test_forgotten_pieces_are_needed_again_and_their_old_hashes_never_reported() -> None:
    b, changes = book(), Changes()
    b.resume({0: A, 1: A}, changes, direct=False)
    forgotten = b.forget([0])
    assert forgotten.unserve == [0] and 0 not in b.written and b.unreported == {1: A} and b.needed() & 1


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["origin", "peer", "confirm", "refuse", "revoke", "hashes"]),
            st.integers(0, 15),
            st.sampled_from([A, B]),
        ),
        max_size=40,
    )
)
def test_the_bit_masks_always_match_the_maps(script: list[tuple[str, int, str]]) -> None:
    """Whatever happens, on_disk is the keys of written and hashed the keys of hashes; a piece written is
    never needed; a withheld piece is on disk."""
    b = book()
    for action, index, digest in script:
        if action == "origin":
            b.start([index])
            b.origin_piece(index, digest, direct=False, refetching=False)
        elif action == "peer":
            b.start([index])
            b.peer_piece("x", index, digest)
        elif action in ("confirm", "refuse"):
            b.confirm(dict(b.unreported), (index,) if action == "refuse" else ())
        elif action == "revoke":
            b.revoke((index,))
        else:
            b.hashes_arrived(b.hash_seq + 1, {index: digest}, ())
        assert set(b.on_disk) == set(b.written) and set(b.hashed) == set(b.hashes)
        assert not b.needed() & b.on_disk.mask and b.withheld <= set(b.written)
