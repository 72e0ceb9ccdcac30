"""The tracker's aliases from a digest download's URL task to a content task (core.content_alias)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shoal.core.content_alias import MAX_CANDIDATES, ContentAliases

URL_TASK = "a" * 40
GOOD, LIE = "1" * 64, "2" * 64


def test_no_alias_until_a_peer_vouches() -> None:
    assert ContentAliases().best(URL_TASK) == ""


def test_the_content_task_most_peers_vouch_for_wins_and_ties_go_to_the_first() -> None:
    aliases = ContentAliases()
    assert aliases.vouch(URL_TASK, LIE, "liar")
    assert aliases.vouch(URL_TASK, GOOD, "honest1")
    assert aliases.best(URL_TASK) == LIE  # a tie: the first vouched
    aliases.vouch(URL_TASK, GOOD, "honest2")
    assert aliases.best(URL_TASK) == GOOD


def test_one_peer_vouching_again_and_again_counts_once() -> None:
    aliases = ContentAliases()
    aliases.vouch(URL_TASK, GOOD, "honest1")
    aliases.vouch(URL_TASK, GOOD, "honest2")
    for _ in range(10):
        aliases.vouch(URL_TASK, LIE, "liar")
    assert aliases.best(URL_TASK) == GOOD


def test_a_peer_counts_for_its_latest_content_task_only() -> None:
    aliases = ContentAliases()
    aliases.vouch(URL_TASK, LIE, "p1")
    aliases.vouch(URL_TASK, LIE, "p2")
    aliases.vouch(URL_TASK, GOOD, "p3")
    aliases.vouch(URL_TASK, GOOD, "p1")  # p1 vouches for another content task now
    assert aliases.best(URL_TASK) == GOOD


def test_only_content_task_ids_are_taken_and_only_for_url_tasks() -> None:
    aliases = ContentAliases()
    assert not aliases.vouch(URL_TASK, "b" * 40, "p")  # a URL task's id
    assert not aliases.vouch(GOOD, LIE, "p")  # a content task needs no alias
    assert aliases.best(URL_TASK) == "" and aliases.best(GOOD) == ""


@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 30)), max_size=300))
def test_candidates_stay_bounded_and_the_best_is_always_one_vouched_for(votes: list[tuple[int, int]]) -> None:
    aliases = ContentAliases()
    for content, peer in votes:
        aliases.vouch(URL_TASK, f"{content:064x}", f"p{peer}")
    candidates = aliases._tasks.get(URL_TASK, {})
    assert len(candidates) <= MAX_CANDIDATES
    best = aliases.best(URL_TASK)
    assert (best == "") == (not votes)
    if votes:
        assert len(candidates[best]) == max(len(v) for v in candidates.values())
