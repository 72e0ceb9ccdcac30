"""Which tracker a client asks about one task: the task's owner, once a cluster member named it.

When several trackers share one database, one of them decides each task and the others forward its
requests there (core.ownership, tracker.cluster). A forward costs both trackers an HTTP exchange, so the
owner is named to the client, which sends that task's requests to the owner directly from then on. It is
named twice over:

- in OWNER_HEADER, by the forwarding member, on every reply it relays from the owner or makes for a task
  whose owner it knows, a 503 included (the owner shed the request, or the forward timed out). A peer the
  owner sheds before it ever got an answer must learn the owner too: told nothing, it would keep asking
  the wrong tracker, and each of its announces would cost both trackers a request just when they are
  busiest;
- in the body of a forwarded announce's reply (``AnnounceResponse.owner``) by the owner itself, which is
  what clients older than the header read.

The rules, and why:

- A hint is per task: a client with many tasks (a daemon) reaches each one's owner, while calls about other
  tasks and other routes keep to the client's list and its current tracker (core.tracker_choice).
- A hint is taken only when it is an http(s) base URL that does not step down from https to http (a
  hint must not move the fleet's credential off TLS), and names a loopback host only when the tracker that
  gave it was reached at a loopback host itself (an owner advertising 127.0.0.1 is on the host of the
  tracker that named it, and from another host that address is the client's own).
- An owner that does not answer (TrackerUnreachable) loses its hints at once, for every task, and hints
  naming it are not taken for BACKOFF seconds: the client falls back to its list, whose trackers forward
  to the task's new owner and name it in turn. A member that keeps being named but cannot be reached
  from this client (an advertised address the client cannot route to) thus costs one failed attempt a
  BACKOFF, not one per announce.
- An owner that answers keeps its hint; when the task has moved, that tracker forwards to the new owner,
  whose reply names it, and the hint follows.
- At most MAX_HINTS tasks are remembered; the one learned longest ago makes room.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from shoal.core.hosts import is_loopback_host

OWNER_HEADER = "X-Shoal-Owner"
"""The response header in which a forwarding member names the owner of the request's task (its advertised
base URL)."""
BACKOFF = 60.0
"""Seconds a tracker that failed as a task's owner is not taken as an owner again."""
MAX_HINTS = 4096
"""Tasks whose owners a client remembers."""


def acceptable(hint: str, via: str) -> bool:
    """Whether a client that reached the tracker at base URL ``via`` may take ``hint`` as a task's owner."""
    try:
        named, asked = urlsplit(hint), urlsplit(via)
        named.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        return False
    if named.scheme not in ("http", "https") or not named.hostname or named.query or named.fragment:
        return False
    if asked.scheme == "https" and named.scheme != "https":
        return False
    return not is_loopback_host(named.hostname) or is_loopback_host(asked.hostname or "")


@dataclass(slots=True)
class OwnerHints:
    """One client's hints: the owner of each task it was told of, and the owners that failed it (until when)."""

    owners: dict[str, str] = field(default_factory=dict)
    failed_until: dict[str, float] = field(default_factory=dict)

    def target(self, task_id: str) -> str | None:
        """The tracker to ask about ``task_id`` first, None for the client's list."""
        return self.owners.get(task_id)

    def learn(self, task_id: str, hint: str, via: str, now: float) -> bool:
        """A reply got through ``via`` named ``hint`` as the owner of ``task_id``: whether it was taken."""
        hint = hint.rstrip("/")
        if not acceptable(hint, via) or self.failed_until.get(hint, float("-inf")) > now:
            return False
        self.owners.pop(task_id, None)  # re-inserted last: the newest hint is the last to make room
        self.owners[task_id] = hint
        while len(self.owners) > MAX_HINTS:
            del self.owners[next(iter(self.owners))]
        return True

    def failed(self, url: str, now: float) -> None:
        """The tracker at ``url`` did not answer as an owner: drop its hints and take none naming it for
        BACKOFF seconds."""
        self.owners = {task: owner for task, owner in self.owners.items() if owner != url}
        self.failed_until = {u: t for u, t in self.failed_until.items() if t > now}
        self.failed_until[url] = now + BACKOFF

    def forget(self, task_id: str) -> None:
        """The client left ``task_id`` (its ``stopped`` announce)."""
        self.owners.pop(task_id, None)
