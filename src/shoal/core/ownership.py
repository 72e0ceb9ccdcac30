"""Which tracker owns which task, when several trackers share one database.

A task's soft state (its peers, bitfields, origin and scope leases) lives in the memory of one tracker, so
two trackers must never decide announces of one task at once: each would lease the same free pieces to
different peers. The rules:

* **Membership.** Each tracker process registers a member row in the database when it starts (a random
  id, the URL other trackers reach it at) and renews it every HEARTBEAT seconds; a row whose ``expires`` has
  passed is a dead member. Each tracker reads the rows again on every heartbeat.
* **Ownership** is rendezvous hashing over the live members: the owner of a task is the member with the
  highest hash of (member id, task id). Every tracker computes the same owner from the same rows with no
  coordination, and a member that joins or dies moves only the tasks it takes or held.
* **Joining is announced ahead.** A member's ``active_from`` is JOIN_DELAY after it registered, longer than
  a heartbeat: every live tracker has read the row before the member counts, so at any moment all of them
  agree whether it does, and the tasks it takes move at one instant rather than while some trackers still
  believe they own them.
* **A member fences itself.** A tracker decides a task's announces only while its own row is in force by
  its own clock: while its last renewal that the database took is less than TTL - FENCE_MARGIN old. One
  that cannot renew (the database unreachable, the process stalled) stops deciding before any other tracker
  can count it dead, which happens only at ``expires``. So there is no moment at which two trackers both
  hold a task, however the database or the network fail, as long as the clocks agree within FENCE_MARGIN.
* **A member that fenced itself joins again.** A renewal that ends after the member stopped deciding (its
  loop stalled, the database was slow) cannot simply extend the row: the others may have counted it dead
  meanwhile and decided its tasks, and would go on doing so until their next heartbeat reads the renewed
  row, while it decided them too. So it registers again, counting JOIN_DELAY later like any new member
  (``must_rejoin``), and forgets the soft state of every task it held unless no other member lived past its
  old row's expiry (``others_took_over``): a tracker alone on its database keeps its peers and leases
  through a stall, since nobody else can have decided its tasks, and counts at once.
* **Taking a task over.** The member that gains a task starts without its soft state: the peers rebuild it
  with their next announces, and origin fetches in flight come back to their peers through ``fetching``.
  For a grace period after tasks move it grants no fresh origin lease on a task it reads from the database
  (``TaskSnapshot.grace``, as after a start): a piece a peer holds would otherwise look free to the first
  asker and leave the origin a second time.
* A tracker that loses a task (a member joined and took it) drops its soft state of the task, so that if
  the task comes back later it starts clean rather than from leases another tracker has since replaced.
* **Each member has a URL of its own.** The others forward a task's requests to its owner's URL; two live
  members with one URL (trackers on different hosts, each advertising its default 127.0.0.1) forward to
  themselves, and the tasks of one of them are answered 503 for as long as both live. The members say so
  (:func:`sharing_url`), since nothing else does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

HEARTBEAT = 1.0
"""Seconds between a tracker's renewals of its member row (and its readings of the others')."""
TTL = 6.0
"""A member row lives this long past its last renewal: a dead tracker's tasks move within about this long."""
JOIN_DELAY = 3.0 * HEARTBEAT
"""A new member counts this long after it registered: every other tracker has read its row by then."""
FENCE_MARGIN = 2.0
"""A tracker stops deciding this long before its row expires: room for clocks that disagree a little and for
a renewal in flight when the process stalls."""


@dataclass(frozen=True, slots=True)
class TrackerMember:
    """A tracker process as its row in the database describes it."""

    tracker_id: str
    url: str
    active_from: float
    expires: float

    def live(self, now: float) -> bool:
        return self.active_from <= now < self.expires


def _score(tracker_id: str, task_id: str) -> bytes:
    return hashlib.blake2b(f"{tracker_id}/{task_id}".encode(), digest_size=8).digest()


def owner(task_id: str, members: Iterable[TrackerMember], now: float) -> TrackerMember | None:
    """The live member that owns ``task_id`` (rendezvous hashing), or None when no member is live."""
    live = [m for m in members if m.live(now)]
    if not live:
        return None
    return max(live, key=lambda m: (_score(m.tracker_id, task_id), m.tracker_id))


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


def lost_tasks(held: Iterable[str], me: str, members: Sequence[TrackerMember], now: float) -> list[str]:
    """The tasks of ``held`` (those whose soft state this tracker keeps) that another member owns now."""
    lost = []
    for task_id in held:
        current = owner(task_id, members, now)
        if current is not None and current.tracker_id != me:
            lost.append(task_id)
    return lost


def sharing_url(me: str, members: Iterable[TrackerMember], now: float) -> list[TrackerMember]:
    """The live members other than ``me`` whose URL is ``me``'s."""
    members = list(members)
    mine = {m.url.rstrip("/") for m in members if m.tracker_id == me}
    return [m for m in members if m.tracker_id != me and m.live(now) and m.url.rstrip("/") in mine]
