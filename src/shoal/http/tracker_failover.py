"""Asking a client's trackers in turn (core.tracker_choice's rule) over any aiohttp call: the tracker
client's JSON API, the pool API's transport, the seeder's BitTorrent announces.

``attempt(url)`` makes one request to the tracker at base URL ``url`` and raises TrackerUnreachable when it
does not answer (its transport maps its own connection errors and timeouts to it; core.tracker_replies
maps a 5xx that is not busy to it). Any other outcome, a reply or another error, is the call's.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from shoal.core.errors import TrackerUnreachable
from shoal.core.tracker_choice import TrackerChoice, reason

log = logging.getLogger(__name__)
T = TypeVar("T")


async def ask_in_turn(choice: TrackerChoice, attempt: Callable[[str], Awaitable[T]]) -> T:
    """``attempt`` at the current tracker and, while they do not answer, at each other one once; the first
    outcome that is not TrackerUnreachable. A call that had to move on logs one line once a tracker answers,
    whatever it answered (busy, say: it is up, and the client stays with it)."""
    failed: dict[int, TrackerUnreachable] = {}
    while (index := choice.next_try(failed)) is not None:
        url = choice.urls[index]
        try:
            outcome = await attempt(url)
        except TrackerUnreachable as exc:
            failed[index] = exc
            choice.failed(index)
            continue
        except Exception:
            _moved_on(failed, url)
            raise
        _moved_on(failed, url)
        return outcome
    raise choice.all_failed(failed)


def _moved_on(failed: dict[int, TrackerUnreachable], url: str) -> None:
    if failed:
        first = next(iter(failed.values()))
        log.warning("tracker %s does not answer (%s); asking %s from now on", first.tracker, reason(first), url)
