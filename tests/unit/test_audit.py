"""Spot checks of reported piece hashes (core.audit), alone and through the tracker's decision."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.core.audit import AUDIT_SHARE, MAX_VOTES, Audit, Verdict, Vote, is_audited, tally

from .factories import IDENTITY, NOW, PIECES, POLICY, bits, digest, request
from .swarm import MemoryTracker

KEY = b"k" * 16
CHECK_ALL = replace(POLICY, audit_key=KEY, audit_share=1.0)


def test_no_key_or_no_share_checks_nothing() -> None:
    assert not any(is_audited(b"", "t", 1, piece) for piece in range(1000))
    assert not any(is_audited(KEY, "t", 1, piece, share=0.0) for piece in range(1000))
    assert all(is_audited(KEY, "t", 1, piece, share=1.0) for piece in range(1000))


@settings(max_examples=10, deadline=None)
@given(st.binary(min_size=16, max_size=16))
def test_about_the_share_of_pieces_is_checked_and_the_key_decides_which(key: bytes) -> None:
    picked = {piece for piece in range(64_000) if is_audited(key, "task", 1, piece)}
    assert abs(len(picked) - 64_000 * AUDIT_SHARE) < 200  # 1,000 expected; 6 standard deviations
    other = {piece for piece in range(64_000) if is_audited(bytes(b ^ 1 for b in key), "task", 1, piece)}
    assert picked != other


def test_two_hosts_agreeing_decide() -> None:
    first = Audit(3, (Vote("liar", "h1", "bad"),))
    assert tally(first) is None
    disputed = first.with_vote(Vote("checker", "h2", "good"))
    assert tally(disputed) is None
    assert tally(disputed.with_vote(Vote("third", "h3", "good"))) == Verdict("good", ("liar",))
    assert tally(disputed.with_vote(Vote("third", "h3", "bad"))) == Verdict("bad", ("checker",))
    # Two votes from one host are one host's word.
    assert tally(Audit(3, (Vote("a", "h1", "x"), Vote("b", "h1", "x")))) is None


# -- through decide_announce ------------------------------------------------------------------------------


def swarm() -> MemoryTracker:
    """A task whose every reported hash is checked; peer "liar" (host 10.0.0.1) holds leases on 0-3."""
    tracker = MemoryTracker(policy=CHECK_ALL)
    for peer_id, host in (("liar", "10.0.0.1"), ("b", "10.0.0.2"), ("c", "10.0.0.3")):
        tracker.announce(request(peer_id, generation=0, origin=IDENTITY), NOW, host)
    out = tracker.announce(request("liar", want_leases=4), NOW, "10.0.0.1")
    assert out.response is not None and out.response.leases == (0, 1, 2, 3)
    return tracker


def report(tracker: MemoryTracker, peer_id: str, host: str, done: dict[int, str], want: int = 0):
    return tracker.announce(request(peer_id, done=done, want_leases=want), NOW, host)


def test_a_checked_piece_is_leased_to_a_peer_on_another_host_and_agreement_closes_it() -> None:
    tracker = swarm()
    report(tracker, "liar", "10.0.0.1", {i: digest(i) for i in range(4)})
    assert set(tracker.audits) == {0, 1, 2, 3}
    out = report(tracker, "b", "10.0.0.2", {}, want=4)
    assert out.response is not None and 0 in out.response.leases  # a checked piece, fetched from the origin
    out = report(tracker, "b", "10.0.0.2", {0: digest(0)})
    assert out.rejected == [] and 0 not in tracker.audits and out.mark_bad == []
    assert tracker.hashes[0] == digest(0)


def test_the_reporters_own_host_never_checks_it() -> None:
    tracker = swarm()
    tracker.announce(request("twin", generation=0, origin=IDENTITY), NOW, "10.0.0.1")
    report(tracker, "liar", "10.0.0.1", {i: digest(i) for i in range(4)})
    out = report(tracker, "twin", "10.0.0.1", {}, want=4)
    assert out.response is not None and not {0, 1, 2, 3} & set(out.response.leases)


def catch(tracker: MemoryTracker, third: str) -> None:
    """The liar reports forged hashes of 0-3; b checks piece 0 and disagrees; c decides with ``third``."""
    report(tracker, "liar", "10.0.0.1", {i: digest(i, "f") for i in range(4)})
    report(tracker, "b", "10.0.0.2", {}, want=1)
    out = report(tracker, "b", "10.0.0.2", {0: digest(0)})
    assert (
        out.rejected == [0]
        and tracker.hashes[0] == digest(0, "f")
        and tracker.audits[0].hosts
        == {
            "10.0.0.1",
            "10.0.0.2",
        }
    )
    out = report(tracker, "c", "10.0.0.3", {}, want=1)
    assert out.response is not None and 0 in out.response.leases
    report(tracker, "c", "10.0.0.3", {0: third})


def test_a_caught_liar_is_banned_and_every_hash_it_reported_is_revoked() -> None:
    tracker = swarm()
    catch(tracker, digest(0))
    assert tracker.peers["liar"].view.bad
    assert tracker.hashes == {0: digest(0)}, "the hash two hosts agree on stands; the liar's others are gone"
    assert not tracker.audits
    # The revoked pieces are free for origin leases again, and the liar gets none.
    out = report(tracker, "b", "10.0.0.2", {}, want=4)
    assert out.response is not None and set(out.response.leases) & {1, 2, 3}
    out = report(tracker, "liar", "10.0.0.1", {}, want=4)
    assert out.response is not None and out.response.leases == ()


def test_a_lying_checker_is_the_one_banned() -> None:
    tracker = swarm()
    catch(tracker, digest(0, "f"))
    assert tracker.peers["b"].view.bad and not tracker.peers["liar"].view.bad
    assert tracker.hashes == {i: digest(i, "f") for i in range(4)}


def test_a_check_without_agreement_closes_after_the_last_vote() -> None:
    tracker = MemoryTracker(policy=CHECK_ALL)
    hosts = [f"10.0.1.{n}" for n in range(MAX_VOTES + 1)]
    for n, host in enumerate(hosts):
        tracker.announce(request(f"p{n}", generation=0, origin=IDENTITY), NOW, host)
    report(tracker, "p0", hosts[0], {}, want=1)
    report(tracker, "p0", hosts[0], {0: digest(0, "0")})
    for n in range(1, MAX_VOTES):
        report(tracker, f"p{n}", hosts[n], {}, want=1)
        report(tracker, f"p{n}", hosts[n], {0: digest(0, str(n))})
    assert not tracker.audits and tracker.hashes[0] == digest(0, "0")
    assert not any(p.view.bad for p in tracker.peers.values())


def test_claims_of_revoked_pieces_count_for_nothing() -> None:
    tracker = swarm()
    report(tracker, "liar", "10.0.0.1", {i: digest(i, "f") for i in range(4)})
    tracker.announce(request("d", generation=0, origin=IDENTITY), NOW, "10.0.0.4")
    tracker.announce(request("d", bitfield=bits(range(4)).encode()), NOW, "10.0.0.4")
    assert sorted(tracker.peers["d"].view.have) == [0, 1, 2, 3]
    catch(tracker, digest(0))
    # d's copies were checked against the forged hashes: none of them is d's now, the replaced piece 0
    # included, even though the tracker otherwise keeps a live peer's pieces.
    assert len(tracker.peers["d"].view.have) == 0
    out = tracker.announce(request("e", generation=0, origin=IDENTITY), NOW, "10.0.0.5")
    out = tracker.announce(request("e", want_leases=PIECES), NOW, "10.0.0.5")
    assert out.response is not None and {1, 2, 3} <= set(out.response.leases), "d's copies of them are not held"


def test_a_piece_is_never_leased_twice_in_one_reply() -> None:
    """A checked piece whose holders have all left is free again: it is leased once, not also as a check."""
    tracker = swarm()
    report(tracker, "liar", "10.0.0.1", {i: digest(i) for i in range(4)})
    tracker.announce(request("liar", event="stopped"), NOW, "10.0.0.1")
    out = report(tracker, "b", "10.0.0.2", {}, want=8)
    assert out.response is not None
    assert len(out.response.leases) == len(set(out.response.leases))
    assert len(out.put_leases) == len({lease.piece for lease in out.put_leases})


def who_checks(**checker: Any) -> str:
    """Peer b (host 10.0.0.2) is leased the check of piece 0, which the liar reported and holds, beside a free
    piece, 4; b then announces ``checker`` (the fields of its request), and c (10.0.0.3), which lacks the piece,
    asks for a lease. One of the two holds the check's lease, never both: returns the peer whose report of the
    piece closes the check."""
    tracker = swarm()
    report(tracker, "liar", "10.0.0.1", {i: digest(i) for i in range(4)})
    tracker.announce(request("liar", bitfield=bits(range(4)).encode()), NOW, "10.0.0.1")
    out = report(tracker, "b", "10.0.0.2", {}, want=1)
    assert out.response is not None and out.response.leases == (0, 4)  # a free piece, and the check
    out = tracker.announce(request("b", **checker), NOW + 0.1, "10.0.0.2")
    assert out.response is not None and 0 in tracker.audits
    kept = 0 in out.response.leases
    out = report(tracker, "c", "10.0.0.3", {}, want=1)
    assert out.response is not None and (0 in out.response.leases) != kept, "the check is leased to one host"
    peer_id, host = ("b", "10.0.0.2") if kept else ("c", "10.0.0.3")
    out = tracker.announce(request(peer_id, done={0: digest(0)}), NOW + 0.2, host)
    assert out.rejected == [] and 0 not in tracker.audits
    return peer_id


def test_a_checkers_lease_outlives_its_announces_until_it_reports() -> None:
    """Every other peer may hold a piece under check. The checker announces while its origin fetch of that
    piece is under way (to report another origin piece, asking for no leases): its lease stays, so its report
    is the vote that closes the check, and no third host fetches the piece from the origin again."""
    assert who_checks(fetching=(0,), done={4: digest(4)}) == "b"


def test_a_checker_whose_lease_was_lost_gets_it_back_by_naming_its_fetch() -> None:
    """The tracker lost the checker's lease (a restart: leases are soft state, checks are not) while its origin
    fetch of the piece under check was under way. Others hold that piece, as they do every piece under check,
    but the checker's ``fetching`` gets the lease back: its report is then the vote that closes the check, and
    no third host fetches the piece from the origin."""
    tracker = swarm()
    report(tracker, "liar", "10.0.0.1", {i: digest(i) for i in range(4)})
    tracker.announce(request("liar", bitfield=bits(range(4)).encode()), NOW, "10.0.0.1")
    out = report(tracker, "b", "10.0.0.2", {}, want=1)
    assert out.response is not None and 0 in out.response.leases
    tracker.leases.clear()  # the restart
    out = tracker.announce(request("b", fetching=(0,)), NOW + 0.1, "10.0.0.2")
    assert out.response is not None and 0 in out.response.leases, "the check's lease back to its fetcher"
    out = report(tracker, "c", "10.0.0.3", {}, want=4)
    assert out.response is not None and 0 not in out.response.leases
    out = tracker.announce(request("b", done={0: digest(0)}), NOW + 0.2, "10.0.0.2")
    assert out.rejected == [] and 0 not in tracker.audits


def test_a_claim_on_a_piece_under_check_from_the_reporters_host_is_no_lease() -> None:
    tracker = swarm()
    report(tracker, "liar", "10.0.0.1", {i: digest(i) for i in range(4)})
    tracker.announce(request("twin", generation=0, origin=IDENTITY), NOW, "10.0.0.1")
    out = tracker.announce(request("twin", fetching=(0,)), NOW + 0.1, "10.0.0.1")
    assert out.response is not None and 0 not in out.response.leases, "a reporter's host never checks it"


def test_a_checker_that_took_the_piece_from_a_peer_gives_the_check_to_another_host() -> None:
    """The checker's origin fetch had not begun when it took the piece under check from a peer (verified
    against the reported hash): it holds the piece, will never fetch it from the origin nor report it, and
    its lease would keep the check from every other host for as long as it announces. Its bitfield says so:
    the lease goes, and the next host that lacks the piece is leased the check."""
    assert who_checks(bitfield=bits([0]).encode()) == "c"


def test_a_checker_keeps_the_check_while_its_fetch_waits_its_turn() -> None:
    """The checker's origin stream is busy with its other leased piece, so its announce names that fetch and
    not the check's, which has not begun (a queued fetch is named once it starts). Others hold the piece, as
    they hold every piece under check, but the checker does not: its fetch is still to come, and its lease
    stays, so its report is the vote that closes the check and no third host fetches the piece. (A fetch the
    announce names would get its lease back anyway, as after a restart; a queued one has only this rule.)"""
    assert who_checks(fetching=(4,)) == "b"


def test_a_checker_that_holds_the_piece_but_still_fetches_it_keeps_the_check() -> None:
    """The checker holds the piece under check (from a peer) while it still names its origin fetch of it: that
    fetch is under way and ends in a report, which is the check's vote. Its lease stays: dropped, the fetch
    would count for nothing, and since the checker holds the piece the fetch would not get the lease back;
    the check would go to a third host, to fetch the piece from the origin once more. Only a checker that
    holds the piece and names no fetch of it gives the check up."""
    assert who_checks(bitfield=bits([0]).encode(), fetching=(0,)) == "b"
