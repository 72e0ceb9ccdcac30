"""Which tasks a tracker gives away so that the trackers sharing one database share the load evenly.

Rendezvous hashing (core.ownership) gives each member about as many tasks as the next, but tasks differ: one
swarm of thousands of peers announces as often as hundreds of small ones together, and its owner saturates
while the others idle. Each member therefore measures the requests it decides a second, task by task, over
a balancing round, and publishes the sum in its member row (``TrackerMember.load``). At the end of a round a
member whose load is above the mean of the live members' by more than TOLERANCE of it (and by FLOOR at
least) places tasks on the least loaded member (core.ownership, "Placements"):

* **As much as levels the two, no more**: the budget is the smaller of this member's excess over the mean
  and the target's room under it, and when several members are over the mean each takes an equal part of
  that room, since all of them may give to the same target in one round. The target then ends at most at
  the mean, and the giver at least at it: neither is over the threshold because of the move, so tasks do
  not go back and forth.
* **The busiest tasks that fit go first**, so a round moves few tasks; a task busier than the whole budget
  stays (moving it would only swap which member is over). Ties go by key, so a decision is repeatable.
* **At most MAX_MOVES a round**: each moved task's peers rebuild its soft state at the new owner, which
  grants no fresh origin lease for a grace period; a round that moved a thousand tasks at once would be a
  thousand such pauses.

* **No round while the loads do not show the last moves yet** (:func:`settled`). A move takes effect about
  JOIN_DELAY after it is made, and a load is measured over a round: until the giver's and the target's
  loads both cover a whole round after the move, the giver would count the tasks it gave as its own and the
  target's room as still free, and give as much again. So a member that gave or was given a task places
  nothing until two rounds after that task's new owner began deciding it (the target's latest round may
  have begun up to a round before that; one more heartbeat for the row that carries its load).

* **A placement goes once its task is unused** (core.ownership, "Placements"): when the member it names has
  held no soft state of the task (no peer announced it there) for ``after`` since it began deciding the task
  or last held it (:func:`unused`). ``after`` is the longest a live peer may go unheard of (the tracker's
  longest peer TTL), so every peer of the task at the move has announced to the new owner, or been
  forgotten, before the placement can go: a task whose peers are merely slow to come back is not handed
  back to the hash owner, which would count it again and place it again a round later.

Rounds are ROUND seconds apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shoal.core.ownership import HEARTBEAT

TOLERANCE = 0.1
"""A member gives tasks away when its load is this share above the mean of the live members'."""
FLOOR = 50.0
"""...and at least this many requests a second above it: below, the imbalance costs nothing worth a move."""
MAX_MOVES = 64
"""Tasks one member places in one round."""
ROUND = 20.0
"""Seconds between a member's balancing rounds (and the window its load is measured over)."""
MAX_PLACEMENTS = 10_000
"""No member places a task while the database holds this many placements: each member reads them all at
every heartbeat. A placement's row goes once its task is unused (:func:`unused`) or the member it names is
gone, so only a fleet with this many busy placed tasks reaches it."""


@dataclass(frozen=True, slots=True)
class Balancing:
    """How a member balances: the module's constants, which a test or an operator may change."""

    gives: bool = True
    """Whether this member gives tasks away (it measures and publishes its load either way)."""
    tolerance: float = TOLERANCE
    floor: float = FLOOR
    round: float = ROUND
    max_moves: int = MAX_MOVES


DEFAULT = Balancing()


def settled(decides_from: float, balancing: Balancing = DEFAULT) -> float:
    """When the loads show a move whose new owner decides from ``decides_from``: both members have measured
    a whole round since (the target's latest round may have begun up to a round before), and the target's
    row carries it (a heartbeat)."""
    return decides_from + 2 * balancing.round + HEARTBEAT


def unused(began: float, last_held: float, now: float, after: float) -> bool:
    """Whether the member a placement names may delete it at ``now``: it began deciding the task at ``began``,
    last held soft state of it at ``last_held`` (-inf: never), and has held none for ``after`` since the
    later of the two."""
    return now - max(began, last_held) >= after


def moves(
    me: str,
    loads: Mapping[str, float],
    rates: Mapping[str, float],
    balancing: Balancing = DEFAULT,
    placements: int = 0,
) -> list[tuple[str, str]]:
    """The tasks ``me`` places on another member this round, as (task, member) pairs.

    ``loads``: each live member's requests a second (``me``'s as just measured, the others' as their rows
    say); ``rates``: the requests a second of each task ``me`` decides and may give away; ``placements``:
    how many the database holds."""
    if not balancing.gives or me not in loads or len(loads) < 2 or placements >= MAX_PLACEMENTS:
        return []
    mean = sum(loads.values()) / len(loads)
    threshold = max(balancing.floor, balancing.tolerance * mean)
    excess = loads[me] - mean
    if excess <= threshold:
        return []
    givers = sum(1 for load in loads.values() if load - mean > threshold)
    target = min((m for m in loads if m != me), key=lambda m: (loads[m], m))
    budget = min(excess, (mean - loads[target]) / givers)
    placed: list[tuple[str, str]] = []
    for key, rate in sorted(rates.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(placed) >= balancing.max_moves or budget <= 0:
            break
        if 0 < rate <= budget:
            placed.append((key, target))
            budget -= rate
    return placed
