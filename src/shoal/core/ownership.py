"""Which tracker owns which task, when several trackers share one database.

A task's soft state (its peers, bitfields, origin and scope leases) lives in the memory of one tracker, so
two trackers must never decide announces of one task at once: each would lease the same free pieces to
different peers. The rules:

* **Membership.** Each tracker process registers a member row in the database when it starts (a random
  id, the URL other trackers reach it at) and renews it every HEARTBEAT seconds; a row whose ``expires`` has
  passed is a dead member. Each renewal reads every member's row too: the member's *reading*, taken at the
  time the renewal began (``read_at``: its own clock, the same instant as ``renewed`` below).
* **Ownership** is rendezvous hashing over the live members: the owner of a task is the member with the
  highest hash of (member id, task id). Every tracker computes the same owner from the same rows with no
  coordination, and a member that joins or dies moves only the tasks it takes or held. A *placement* (a row
  of its own, read with the member rows) overrides the hash for one task: the rules under "Placements".
* **A member fences itself.** A tracker decides a task's announces only while its own row is in force by
  its own clock: while its last renewal that the database took began less than TTL - FENCE_MARGIN ago
  (:func:`in_force`). So a member decides on a reading at most TTL - FENCE_MARGIN old, and one that cannot
  renew (the database unreachable, the process stalled, its loop wedged) stops deciding before any other
  tracker can count it dead.
* **A member counts as dead only by a reading taken after its row expired** (:meth:`TrackerMember.live`
  with ``read_at``). A reading older than that cannot tell: the member may have renewed since, and decided
  on that renewal until TTL - FENCE_MARGIN after it. A renewal it decides on committed before its fence
  (one that ends later makes it join again, below), so FENCE_MARGIN before the row it extended would have
  expired: any reading taken after that expiry has it.
* **Joining is announced ahead.** A member's ``active_from`` is JOIN_DELAY after it registered, and it
  decides only from JOIN_DELAY after its registration committed (``counts_from``): every other member
  decides on a reading at most TTL - FENCE_MARGIN old, so by then every reading a member decides on has
  the row, and the tasks the member takes move at one instant rather than while some trackers still
  believe they own them.
* Together: as long as the clocks agree within FENCE_MARGIN, there is no moment at which two trackers both
  decide a task, however late their renewals and readings come (a starved process, a slow database).
* **A member that fenced itself joins again.** A renewal that ends after the member stopped deciding (it
  stalled, the database was slow) cannot simply extend the row: the others may have counted it dead
  meanwhile and decided its tasks, and would go on doing so until their next reading has the renewed
  row, while it decided them too. So it registers again, counting JOIN_DELAY later like any new member
  (``must_rejoin``), and forgets the soft state of every task it held unless no other member lived past its
  old row's expiry (``others_took_over``): a tracker alone on its database keeps its peers and leases
  through a stall, since nobody else can have decided its tasks, and counts at once.
* **A busy member keeps its row; a wedged one loses it.** The renewals run apart from the work they fence
  (tracker.membership: a thread with its own event loop and database connection), so a backlog of
  requests delays no renewal. They stop when the work's event loop has made no progress for
  LOOP_PATIENCE (:func:`keeps_renewing`): a tracker whose loop is wedged lets its row lapse, and the
  others take its tasks over (liveness).
* **Durable writes carry the task's epoch.** They are decided under the fence but commit later (group
  commit): a write of a decision made just before a task moved could commit after the new owner read the
  database, and stand beside facts the new owner decides on without it (a hash it never hands out, a
  generation it does not know). So each task's row has an ownership epoch. The member that takes a task
  over (reads it from the database to decide it, as its owner) bumps the epoch in the transaction that
  reads the task's facts, and its copy keeps the epoch it bumped to; a later write of that copy lands only
  while the database still holds that epoch, checked under the task row's lock, so no take-over comes
  between the check and the writes (:class:`EpochFence`, after a batch of writes locked its tasks' rows and
  read their epochs; or, on PostgreSQL, each write's UPDATE of the task's row, which matches the row only
  at the write's epoch: storage.task_sql). A write that finds another epoch is left out, not failed: the
  rest of its batch commits, the task's soft state is dropped as a lost task's, and the announce is
  answered 503 (storage.tracker_store, TaskMoved). The bump is one statement per take-over, none per
  announce. A task's creation is checked by its insert
  instead (it finds the task created: TaskCreatedElsewhere); the row it makes has CREATED_EPOCH.
* **Only the owner takes a task over.** The owner is checked at the moment the take-over begins: a member
  that reads a task it does not own (a request that waited on the loop across a move) bumps nothing, keeps
  no copy and writes nothing from what it read, or it would fence the real owner out of its own task.
* **Two writes carry no epoch.** The record that a task still has peers (its ``updated``) only makes a
  task's retirement later, late or not. The removal of a task idle for the retention is decided on the
  database's rows, not on a copy: one that commits after another member took the task over leaves that
  member's copy without a row, its next write is left out, and the task is made afresh, as if the removal
  had come just before the take-over.
* A SQLite file has one tracker (storage.db_lock): nobody else takes its tasks over, and nothing is bumped.
* **Taking a task over.** The member that gains a task starts without its soft state: the peers rebuild it
  with their next announces, and origin fetches in flight come back to their peers through ``fetching``.
  For a grace period after tasks move it grants no fresh origin lease on a task it reads from the database
  (``TaskSnapshot.grace``, as after a start): a piece a peer holds would otherwise look free to the first
  asker and leave the origin a second time.
* A tracker that loses a task (a member joined and took it) drops its soft state of the task, so that if
  the task comes back later it starts clean rather than from leases another tracker has since replaced.
* **Placements.** The hash spreads tasks evenly by count, not by load: one swarm of thousands of peers can be
  a fifth of a fleet's announces, and its owner answers far more than the others. So a member above the
  cluster's mean load gives tasks to the least loaded (core.balance decides which): it writes a placement,
  (task, the member it names, ``active_from``, ``previous``). Before ``active_from`` the task's owner is what
  it was when the placement was made, ``previous`` (the member a replaced placement named) or the hash owner
  when ``previous`` is None; from ``active_from`` it is the member named while that member is live, and the
  hash owner among the live when it is dead (:func:`owner` with ``placements``). So writing the row changes
  nothing for anyone until ``active_from``, and a dead member's placements fall back to the hash at the
  instant its row counts dead, as its hashed tasks do.
* **Only the member deciding a task places it, and it stops at ``active_from`` by its own record** of the
  move, whether or not its readings have the row yet (tracker.cluster keeps the move pending until one
  does, and writes it again until it lands). A reader whose reading lacks the row goes on with the old
  owner, so the member named decides only from JOIN_DELAY after the first of its readings that has the row
  (read after the row committed), and no sooner than FENCE_MARGIN after ``active_from``
  (:func:`placed_from`): by then every reading a member decides on has the row, as with a join.
* **A placement is written only over the row its member read.** The write is a compare-and-set
  (storage.cluster_store): it lands only while the task's row, or its absence, is still what the placing
  member's reading showed (or it is already the move itself: a write again after a failure that may have
  committed). A row changed meanwhile means that reading was stale: a renewal deleted the placement of a dead
  member (below), or an earlier write of this very move committed unseen, and the member named has decided
  the task since and placed it on. The move is then dropped, and the placing member keeps to its own record
  (it stops at ``active_from``, as if the move stood) until a reading taken after the refusal: from that one
  on, the rows alone say whether it decides the task (:func:`refusal_seen`). Going back to its older reading
  at once could make it decide beside the member the rows name.
* **A placement goes once its task is unused.** The member it names deletes the row (that row only, by a
  compare-and-delete: one replaced since stays) when it has decided the task and held no soft state of it
  for a while (core.balance.unused: no peer has announced it there). It stops deciding the task by its own
  record before the delete is sent, and decides it again only on a reading without that row
  (:func:`withdrawing`). The delete hands the task to the hash owner, with no delay announced ahead: any
  reading another member decides on either has the row, which names the member that stopped (it refuses:
  the task is moving), or was taken after the delete committed and names the hash owner, who decides the
  task as one never placed. No reading decided on predates the row (the member named decided only from
  :func:`placed_from`), and nobody else placed the task since (only its decider does). So there is one
  decider at most, and the new one needs no grace: an unused task has no lease out.
* A placement's row is deleted too once the member it names has no row left (dead for FORGET_AFTER, in
  storage.cluster_store) and its ``active_from`` is JOIN_DELAY past: the hash owned the task already.
* **Each member has a URL of its own.** The others forward a task's requests to its owner's URL; two live
  members with one URL (trackers on different hosts, each advertising its default 127.0.0.1) forward to
  themselves, and the tasks of one of them are answered 503 for as long as both live. The members say so
  (:func:`sharing_url`), since nothing else does.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

HEARTBEAT = 1.0
"""Seconds between a tracker's renewals of its member row (and its readings of the others')."""
TTL = 6.0
"""A member row lives this long past its last renewal: a dead tracker's tasks move within about this long
(and a heartbeat, for the reading that shows it dead)."""
FENCE_MARGIN = 2.0
"""A tracker stops deciding this long before its row expires: room for clocks that disagree a little and for
a renewal in flight when the process stalls."""
JOIN_DELAY = TTL
"""A new member counts this long after it registered (``active_from``), and decides no sooner than this
long after its registration committed: longer than any other member decides on one reading
(TTL - FENCE_MARGIN), by FENCE_MARGIN for clocks that disagree a little."""
LOOP_PATIENCE = 10.0
"""Seconds the tracker's event loop may make no progress before its renewals stop and its row lapses: a
wedged tracker hands its tasks on, and one far behind its work but running keeps them."""
CREATED_EPOCH = 0
"""The epoch of a task's row as its creation writes it; each take-over adds one."""


@dataclass(frozen=True, slots=True)
class TrackerMember:
    """A tracker process as its row in the database describes it."""

    tracker_id: str
    url: str
    active_from: float
    expires: float
    load: float = 0.0
    """The requests it decided a second over its latest balancing round (core.balance)."""

    def live(self, now: float, read_at: float | None = None) -> bool:
        """Whether the member counts at ``now``, by a reading of its row taken at ``read_at`` (default
        ``now``): from ``active_from``, until a reading taken after its ``expires`` shows it dead."""
        seen = now if read_at is None else min(now, read_at)
        return self.active_from <= now and seen < self.expires


def _score(tracker_id: str, task_id: str) -> bytes:
    return hashlib.blake2b(f"{tracker_id}/{task_id}".encode(), digest_size=8).digest()


@dataclass(frozen=True, slots=True)
class Placement:
    """A task given to a member by load rather than by hash (the rules under "Placements")."""

    key: str
    tracker_id: str
    """The member that owns the task from ``active_from`` while it is live."""
    active_from: float
    previous: str | None
    """The member that owned it by the placement this one replaced; None: by the hash."""


Placements = Mapping[str, Placement]


def owner(
    task_id: str,
    members: Iterable[TrackerMember],
    now: float,
    read_at: float | None = None,
    placements: Placements | None = None,
) -> TrackerMember | None:
    """The live member that owns ``task_id`` by rows read at ``read_at`` (default ``now``): the member its
    placement names, if any is in force, else the one rendezvous hashing picks; None when no member is live."""
    live = [m for m in members if m.live(now, read_at)]
    if len(live) <= 1:
        # Whatever a placement names and whatever the hash, the owner is a live member: the only one, if any.
        # A cluster of one is the common case, and this is asked on every request it decides.
        return live[0] if live else None
    placed = placements.get(task_id) if placements else None
    if placed is not None:
        named = placed.tracker_id if now >= placed.active_from else placed.previous
        for member in live:
            if member.tracker_id == named:
                return member
    return max(live, key=lambda m: (_score(m.tracker_id, task_id), m.tracker_id))


def replaceable(before: Placement | None, now: float) -> bool:
    """Whether a member deciding a task may place it again at ``now``, ``before`` being its placement as the
    member reads it: unless ``before`` is not in force yet, since it names one owner until its ``active_from``
    and another after, which no single ``previous`` of the replacing row can (the task stays until it is)."""
    return before is None or now >= before.active_from


def replacing(key: str, target: str, before: Placement | None, active_from: float) -> Placement:
    """The placement of ``key`` on ``target`` from ``active_from`` that replaces ``before`` (:func:`replaceable`).
    Until ``active_from`` it must name the owner ``before`` names: its member, live or not, not the hash owner
    for one dead now, since that member may register again (the same id) before ``active_from``, and every
    reading without the new row then names it while the placing member, by its own record, still decides."""
    return Placement(key, target, active_from, None if before is None else before.tracker_id)


def withdrawing(key: str, withdrawn: Placements, placements: Placements) -> bool:
    """Whether a member that deletes ``withdrawn[key]`` (a placement naming it, of a task it no longer uses)
    must still not decide ``key``: its reading (``placements``) has that row yet, and names it owner while
    another member's reading, taken after the delete committed, names the hash owner."""
    gone = withdrawn.get(key)
    return gone is not None and placements.get(key) == gone


def refusal_seen(refused: float, renewed: float) -> bool:
    """Whether a reading whose renewal began at ``renewed`` shows what a compare-and-set of a placement found at
    ``refused`` (both on the placing member's clock): it was read after the refusal, so it has the row that
    was there then, or a later one."""
    return renewed > refused


def placed_from(placement: Placement, seen: float) -> float:
    """When the member ``placement`` names may decide its task, having first read the row at ``seen`` (its
    clock): FENCE_MARGIN after ``active_from``, and JOIN_DELAY after ``seen``, when every reading another
    member decides on was taken after the row committed."""
    return max(placement.active_from + FENCE_MARGIN, seen + JOIN_DELAY)


def in_force(renewed: float, now: float) -> bool:
    """Whether a member whose row the database last renewed at ``renewed`` (its own clock) may decide: the
    row lives until ``renewed + TTL`` and the member stops FENCE_MARGIN before."""
    return now < renewed + TTL - FENCE_MARGIN


def must_rejoin(renewed: float, now: float) -> bool:
    """Whether a member whose row the database last renewed at ``renewed`` (its own clock), and whose renewal
    ends at ``now``, must forget its tasks and register again: it had stopped deciding (:func:`in_force`)
    before the renewal took, so others may have decided its tasks meanwhile."""
    return not in_force(renewed, now)


def others_took_over(others: Iterable[TrackerMember], expired: float) -> bool:
    """Whether any of ``others`` (the other members' rows, as last read and as read when registering again)
    may have decided this member's tasks after its row, which expired at ``expired``, was counted dead: one
    whose row lived past that (by up to FENCE_MARGIN earlier, for clocks that disagree)."""
    return any(m.expires > expired - FENCE_MARGIN for m in others)


def keeps_renewing(loop_seen: float, now: float) -> bool:
    """Whether the renewals go on: the event loop whose decisions the row fences made progress at
    ``loop_seen`` (its last tick), less than LOOP_PATIENCE before ``now``."""
    return now - loop_seen < LOOP_PATIENCE


def counts_from(registered: float, active_from: float, committed: float) -> float:
    """When a member that registered at ``registered`` (its clock) may decide: at its ``active_from``, and
    unless it was alone (``active_from`` is ``registered``: no other member can be deciding), no sooner than
    JOIN_DELAY after its registration ``committed``, the last moment another member may have read the rows
    without it."""
    return active_from if active_from <= registered else max(active_from, committed + JOIN_DELAY)


def lost_tasks(
    held: Iterable[str],
    me: str,
    members: Sequence[TrackerMember],
    now: float,
    read_at: float | None = None,
    placements: Placements | None = None,
) -> list[str]:
    """The tasks of ``held`` (those whose soft state this tracker keeps) that another member owns now."""
    lost = []
    for task_id in held:
        current = owner(task_id, members, now, read_at, placements)
        if current is not None and current.tracker_id != me:
            lost.append(task_id)
    return lost


def move_times(members: Iterable[TrackerMember], starts: Iterable[float] = ()) -> tuple[float, ...]:
    """Every instant at which tasks move between ``members`` by their rows (each member's ``active_from``, when
    it counts, and ``expires``, when it is dead), and ``starts`` (when this member decides tasks placed on it),
    in order: :func:`last_move` of them at any ``now``."""
    return tuple(sorted([*(m.active_from for m in members), *(m.expires for m in members), *starts]))


def last_move(times: Sequence[float], now: float) -> float:
    """The latest of ``times`` (:func:`move_times`, in order) at or before ``now``; -inf when none is."""
    at = bisect.bisect_right(times, now)
    return times[at - 1] if at else -math.inf


def sharing_url(me: str, members: Iterable[TrackerMember], now: float) -> list[TrackerMember]:
    """The live members other than ``me`` whose URL is ``me``'s."""
    members = list(members)
    mine = {m.url.rstrip("/") for m in members if m.tracker_id == me}
    return [m for m in members if m.tracker_id != me and m.live(now) and m.url.rstrip("/") in mine]


class EpochFence:
    """Which writes of a batch land (the rule "Durable writes carry the task's epoch"), in the order they run.

    ``stored``: each task's epoch in the database as the batch began (read under lock, so it stays so until
    the batch commits), a task without a row missing; None on a database one tracker owns (SQLite), where
    nobody else takes a task over, and on PostgreSQL, where each write's own UPDATE checks the epoch
    (storage.task_sql). A write carries the epoch of the copy it was decided on, None when that
    copy was read without taking the task over."""

    def __init__(self, stored: Mapping[str, int] | None) -> None:
        self._stored = None if stored is None else dict(stored)

    def lands(self, task_id: str, epoch: int | None) -> bool:
        """Whether a write of ``task_id`` decided on a copy of ``epoch`` lands: the copy took the task over,
        and the task's epoch is still the copy's (a task whose row is gone has none)."""
        if epoch is None:
            return False
        return self._stored is None or self._stored.get(task_id) == epoch

    def created(self, task_id: str) -> None:
        """The batch created ``task_id``: the writes of it behind the creation check against its epoch."""
        if self._stored is not None:
            self._stored[task_id] = CREATED_EPOCH
