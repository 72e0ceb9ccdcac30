"""Which content task holds the file a digest download names: the tracker's aliases, decided here.

A download with ``--digest`` (``shoal get``, the daemon) joins a URL task whose id covers the URL and the
digest (core.ids.task_id_for_url). A peer that finished one, its file matching the digest, registers the
file's content task (its id commits to every piece hash: core.ids.content_task_id) and vouches for it in
its announces of the URL task. The tracker names the best-vouched content task in its replies to peers
that join the URL task, and those switch to it: they check its piece list against its id, then every piece
against that list, and the whole file against the digest at the end.

Rules, and why:

- An alias is a hint, never trusted: a peer follows it only with a digest to check the file against, and
  stops following it (for that download) when the file or an origin piece disagrees; it then downloads as
  the URL task. A lying voucher costs the peers it fools one wasted attempt, and can never place a wrong
  file. A download without a digest never follows an alias (it would have nothing to check against).
- The content task vouched for by the most distinct peers wins, so honest finishers outvote a liar once a
  few have finished; ties go to the earliest vouched.
- Bounded: at most MAX_CANDIDATES content tasks per URL task (the least vouched one makes room) and
  MAX_VOUCHERS peers counted per candidate, and at most MAX_TASKS URL tasks (the least recently vouched
  goes). Aliases are soft state, like peers: a restarted tracker learns them again from the next finisher.
"""

from __future__ import annotations

from collections import OrderedDict

from shoal.core.ids import is_content_task

MAX_CANDIDATES = 8
MAX_VOUCHERS = 64
MAX_TASKS = 100_000


class ContentAliases:
    def __init__(self) -> None:
        # URL task -> content task -> the peers vouching for it (in the order vouched: ties go to the first).
        self._tasks: OrderedDict[str, dict[str, set[str]]] = OrderedDict()

    def vouch(self, url_task: str, content_task: str, peer_id: str) -> bool:
        """``peer_id`` finished ``url_task`` and names ``content_task`` as its file; False when refused
        (not a content task id, or a content task named for a content task)."""
        if not is_content_task(content_task) or is_content_task(url_task):
            return False
        candidates = self._tasks.setdefault(url_task, {})
        self._tasks.move_to_end(url_task)
        if content_task not in candidates and len(candidates) >= MAX_CANDIDATES:
            del candidates[min(candidates, key=lambda c: len(candidates[c]))]
        vouchers = candidates.setdefault(content_task, set())
        for other, others in candidates.items():
            if other != content_task:
                others.discard(peer_id)  # a peer vouches for one content task of a URL task: its latest
        if len(vouchers) < MAX_VOUCHERS:
            vouchers.add(peer_id)
        while len(self._tasks) > MAX_TASKS:
            self._tasks.popitem(last=False)
        return True

    def best(self, url_task: str) -> str:
        """The content task most peers vouched for; "" when none."""
        candidates = self._tasks.get(url_task)
        if not candidates:
            return ""
        best = max(candidates, key=lambda c: len(candidates[c]))  # max keeps the first of equals
        return best if candidates[best] else ""
