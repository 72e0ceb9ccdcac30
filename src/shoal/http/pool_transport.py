"""The aiohttp transport of the pool API's client (core.pool_api), for the services that already run an
aiohttp session: the daemon's pool membership (daemon.pools) and the mirror worker's pushes
(mirror.publish). ``shoal pool`` runs the same calls over urllib (tracker.pool_client), to start quickly.

Only aiohttp's own errors are mapped here (a tracker that cannot be reached, or does not answer in time, is
TrackerUnreachable, and the next tracker of the list is asked); what a reply means, a refusal included, is
core.pool_api's one mapping.
"""

from __future__ import annotations

from typing import TypeVar

import aiohttp

from shoal.core import pool_api
from shoal.core.errors import TrackerUnreachable
from shoal.core.tracker_choice import TrackerChoice
from shoal.http.tracker_failover import ask_in_turn

R = TypeVar("R")


async def run_call(
    session: aiohttp.ClientSession,
    trackers: TrackerChoice,
    call: pool_api.Call[R],
    *,
    token: str | None,
    seconds: float,
) -> R:
    """Send ``call`` to ``trackers`` (the current one, and the next while they do not answer:
    http.tracker_failover) with ``token`` as the bearer, waiting at most ``seconds`` for each; its reply as
    core.pool_api reads it."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if call.body is not None:
        headers["Content-Type"] = "application/json"

    async def attempt(tracker: str) -> R:
        try:
            async with session.request(
                call.method,
                f"{tracker}{call.path}",
                data=call.body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=seconds),
            ) as response:
                body = await response.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise TrackerUnreachable(
                f"cannot reach the tracker at {tracker}: {exc or type(exc).__name__}", tracker=tracker
            ) from exc
        content_type = response.headers.get("Content-Type", "").split(";")[0]
        return call.read(tracker, response.status, response.reason or "", content_type, body)

    return await ask_in_turn(trackers, attempt)
