"""Which tracker a client asks about one task (core.owner_hint): the owner a forwarded reply named, with values."""

from __future__ import annotations

import pytest

from shoal.core.owner_hint import BACKOFF, MAX_HINTS, OwnerHints, acceptable

T1, T2, T3 = "http://10.0.0.1:6969", "http://10.0.0.2:6969", "http://10.0.0.3:6969"
TASK, OTHER = "a" * 64, "b" * 64


def test_a_named_owner_is_asked_about_its_task_only() -> None:
    hints = OwnerHints()
    assert hints.target(TASK) is None, "nothing learned: the client's list"
    assert hints.learn(TASK, T2 + "/", via=T1, now=0.0)
    assert hints.target(TASK) == T2, "the owner's base URL, without its trailing slash"
    assert hints.target(OTHER) is None, "another task still goes to the list"


def test_a_newer_hint_replaces_the_older() -> None:
    hints = OwnerHints()
    hints.learn(TASK, T2, via=T1, now=0.0)
    assert hints.learn(TASK, T3, via=T2, now=1.0), "the task moved: its old owner forwarded to the new one"
    assert hints.target(TASK) == T3


def test_an_owner_that_does_not_answer_loses_every_hint_and_is_not_taken_again_for_a_while() -> None:
    hints = OwnerHints()
    hints.learn(TASK, T2, via=T1, now=0.0)
    hints.learn(OTHER, T2, via=T1, now=0.0)
    hints.failed(T2, now=10.0)
    assert hints.target(TASK) is None and hints.target(OTHER) is None, "both back to the list"
    assert not hints.learn(TASK, T2, via=T1, now=10.0 + BACKOFF - 0.001), "named again within the backoff"
    assert hints.target(TASK) is None
    assert hints.learn(TASK, T3, via=T1, now=11.0), "another owner is taken meanwhile"
    assert hints.learn(OTHER, T2, via=T1, now=10.0 + BACKOFF), "taken again once the backoff ran out"
    assert hints.target(OTHER) == T2


def test_a_failure_of_another_tracker_leaves_a_hint_alone() -> None:
    hints = OwnerHints()
    hints.learn(TASK, T2, via=T1, now=0.0)
    hints.failed(T3, now=1.0)
    assert hints.target(TASK) == T2


def test_leaving_a_task_forgets_its_owner() -> None:
    hints = OwnerHints()
    hints.learn(TASK, T2, via=T1, now=0.0)
    hints.forget(TASK)
    assert hints.target(TASK) is None
    hints.forget(TASK)  # a task never hinted: nothing to forget, no error
    assert hints.target(TASK) is None


def test_the_hints_are_bounded_and_the_oldest_makes_room() -> None:
    hints = OwnerHints()
    tasks = [f"{n:064x}" for n in range(MAX_HINTS + 1)]
    for n, task in enumerate(tasks):
        hints.learn(task, T2, via=T1, now=float(n))
    assert len(hints.owners) == MAX_HINTS
    assert hints.target(tasks[0]) is None, "the first learned went"
    assert hints.target(tasks[1]) == T2 and hints.target(tasks[-1]) == T2
    hints.learn(tasks[1], T3, via=T1, now=1e6)  # learned again: now the newest
    hints.learn("f" * 64, T2, via=T1, now=1e6)
    assert hints.target(tasks[1]) == T3, "relearned, so not the oldest"
    assert hints.target(tasks[2]) is None, "the oldest then"


@pytest.mark.parametrize(
    ("hint", "via", "taken"),
    [
        (T2, T1, True),
        ("https://t2.example:6969", "https://t1.example:6969", True),
        ("https://t2.example", T1, True),  # up to TLS is fine
        ("http://t2.example:6969", "https://t1.example:6969", False),  # never down from TLS
        ("http://127.0.0.1:7001", "http://127.0.0.1:7000", True),  # trackers of one host, reached there
        ("http://127.0.0.1:7001", T1, False),  # another host's loopback is the client's own
        ("http://localhost:7001", T1, False),
        ("http://[::1]:7001", T1, False),
        ("http://[::1]:7001", "http://localhost:7000", True),
        ("ftp://t2.example", T1, False),
        ("t2.example:6969", T1, False),  # no scheme: not a base URL a member advertises
        ("http://t2.example:99999", T1, False),
        ("http://:6969", T1, False),
        ("http://t2.example/?x=1", T1, False),
        ("", T1, False),
    ],
)
def test_which_hints_are_taken(hint: str, via: str, taken: bool) -> None:
    assert acceptable(hint, via) is taken
    hints = OwnerHints()
    assert hints.learn(TASK, hint, via=via, now=0.0) is taken
    assert (hints.target(TASK) is not None) is taken
