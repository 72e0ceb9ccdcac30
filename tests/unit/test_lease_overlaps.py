"""The load generator's count of duplicate leases (benchmarks/tracker_lease_overlaps.py), with values: a grant
overlaps a live holder's lease only by the tracker's own rules, whatever order the replies arrive in."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from tracker_lease_overlaps import Leases

TASK = "t" * 40
ONE, TWO = "http://127.0.0.1:1", "http://127.0.0.1:2"


def granted(leases: Leases, peer: str, pieces: list[int], at: float, decider: str = ONE) -> None:
    """``peer``'s announce scheduled at ``at`` reported nothing, and its reply (arriving then) leased ``pieces``."""
    leases.sent(peer, [])
    leases.answered(TASK, peer, pieces, at, at, decider)


def test_a_piece_leased_to_another_peer_while_its_live_holder_is_silent_on_it_is_a_duplicate() -> None:
    leases = Leases(peer_ttl=60.0)
    granted(leases, "holder", [7], at=1.0)
    granted(leases, "other", [7], at=2.0)
    assert (leases.duplicates, leases.across_owners) == (1, 0)
    assert leases.examples == [f"task {TASK[:12]} piece 7: holder and other"]


def test_grants_by_two_trackers_count_across_owners() -> None:
    leases = Leases(peer_ttl=60.0)
    granted(leases, "holder", [7], at=1.0, decider=ONE)
    granted(leases, "other", [7], at=2.0, decider=TWO)
    assert (leases.duplicates, leases.across_owners) == (0, 1)


def test_a_spot_check_lease_seen_before_the_holders_report_is_answered_is_no_duplicate() -> None:
    """The holder reports piece 7 done; the tracker decides that, then leases 7 to a checker on another host
    (core.audit) and answers the checker at once, while the holder's reply waits for its hash to commit."""
    leases = Leases(peer_ttl=60.0)
    granted(leases, "holder", [7], at=1.0)
    leases.sent("holder", [7])  # its next announce reports 7 done
    granted(leases, "checker", [7], at=2.1)
    leases.answered(TASK, "holder", [], 2.0, 2.2, ONE, done=[7])  # taken: the holder's lease was live then
    assert (leases.duplicates, leases.across_owners, leases.settled, leases.undecided) == (0, 0, 1, 0)


def test_a_grant_while_the_holders_report_is_in_flight_is_a_duplicate_when_the_report_is_rejected() -> None:
    """Rejected, the report found the holder's lease gone: the tracker had leased the piece to the other peer
    while the holder's lease was live by the generator's count."""
    leases = Leases(peer_ttl=60.0)
    granted(leases, "holder", [7], at=1.0)
    leases.sent("holder", [7])
    granted(leases, "other", [7], at=2.1)
    assert leases.undecided == 1 and leases.duplicates == 0
    leases.answered(TASK, "holder", [], 2.0, 2.2, ONE, done=[7], rejected=[7])
    assert (leases.duplicates, leases.settled, leases.undecided) == (1, 0, 0)


def test_a_report_whose_reply_was_lost_is_judged_by_the_one_that_repeats_it() -> None:
    leases = Leases(peer_ttl=60.0)
    granted(leases, "holder", [7], at=1.0)
    leases.sent("holder", [7])  # timed out: the simulated peer reports 7 again at its next turn
    granted(leases, "checker", [7], at=2.5)
    leases.sent("holder", [7])
    leases.answered(TASK, "holder", [], 3.0, 3.1, ONE, done=[7])
    assert (leases.duplicates, leases.settled, leases.undecided) == (0, 1, 0)


def test_a_piece_leased_again_after_its_holders_report_was_answered_is_no_duplicate() -> None:
    leases = Leases(peer_ttl=60.0)
    granted(leases, "holder", [7], at=1.0)
    leases.sent("holder", [7])
    leases.answered(TASK, "holder", [], 2.0, 2.1, ONE, done=[7])
    granted(leases, "checker", [7], at=3.0)
    assert (leases.duplicates, leases.settled) == (0, 0)


def test_a_report_built_after_the_due_time_still_ends_the_lease_it_reports() -> None:
    """The grant arrived after the next announce's due time but before the generator built it (its lag): the
    announce reports the piece, so its answer ends that lease though the grant is later than its due time."""
    leases = Leases(peer_ttl=60.0)
    leases.sent("holder", [])
    leases.answered(TASK, "holder", [7], 1.0, 2.05, ONE)  # the reply arrives at 2.05
    leases.sent("holder", [7])  # the turn due at 2.0, built at 2.1
    leases.answered(TASK, "holder", [], 2.0, 2.2, ONE, done=[7])
    granted(leases, "checker", [7], at=3.0)
    assert leases.duplicates == 0


def test_a_holder_silent_for_most_of_the_ttl_has_lost_its_lease() -> None:
    leases = Leases(peer_ttl=10.0)
    granted(leases, "holder", [7], at=1.0)
    granted(leases, "other", [7], at=1.0 + 0.8 * 10.0)
    assert leases.duplicates == 0


def test_an_overlap_across_owners_says_how_long_its_holder_had_been_silent_and_how_often_refused() -> None:
    leases = Leases(peer_ttl=60.0)
    granted(leases, "holder", [7], at=1.0, decider=ONE)
    leases.refused("holder")  # its next announces were shed
    leases.refused("holder")
    granted(leases, "other", [7], at=12.5, decider=TWO)
    assert leases.across_examples == [
        f"task {TASK[:12]} piece 7: holder and other 11.5 s later "
        "(its holder silent; last answered 11.5 s before, 2 announces refused since)"
    ]
    assert (leases.across_owners, leases.across_refused, leases.examples) == (1, 1, [])


def test_an_overlap_across_owners_whose_holder_was_only_quiet_between_turns_is_counted_apart() -> None:
    leases = Leases(peer_ttl=60.0)
    granted(leases, "holder", [7], at=1.0, decider=ONE)
    leases.refused("other")  # another peer's refusal is not the holder's
    granted(leases, "other", [7], at=12.5, decider=TWO)
    assert (leases.across_owners, leases.across_refused) == (1, 0)
    assert leases.across_examples[0].endswith(
        "(its holder silent; last answered 11.5 s before, 0 announces refused since)"
    )


def test_a_peer_answered_again_has_no_refusals_behind_it() -> None:
    leases = Leases(peer_ttl=60.0)
    leases.refused("holder")
    granted(leases, "holder", [7], at=1.0, decider=ONE)
    granted(leases, "other", [7], at=12.5, decider=TWO)
    assert (leases.across_owners, leases.across_refused) == (1, 0)
