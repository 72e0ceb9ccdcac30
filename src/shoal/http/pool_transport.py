"""The aiohttp transport of the pool API's client (core.pool_api), for the services that already run an
aiohttp session: the daemon's pool membership (daemon.pools) and the mirror worker's pushes
(mirror.publish). ``shoal pool`` runs the same calls over urllib (tracker.pool_client), to start quickly.

Only aiohttp's own errors are mapped here (a tracker that cannot be reached, or does not answer in time, is
TrackerUnavailable); what a reply means, a refusal included, is core.pool_api's one mapping.
"""

from __future__ import annotations

import time
from typing import TypeVar

import aiohttp

from shoal.core import pool_api
from shoal.core.errors import TrackerUnavailable
from shoal.http.credentials import Credentials

R = TypeVar("R")


async def run_call(
    session: aiohttp.ClientSession,
    tracker: str,
    call: pool_api.Call[R],
    *,
    token: str | None,
    seconds: float,
    credentials: Credentials | None = None,
) -> R:
    """Send ``call`` to ``tracker`` (its base URL) with ``token`` as the bearer and the fleet's
    ``credentials``, waiting at most ``seconds``; its reply as core.pool_api reads it."""
    credentials = credentials or Credentials()
    headers = credentials.tracker_headers(time.time())
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if call.body is not None:
        headers["Content-Type"] = "application/json"
    try:
        async with session.request(
            call.method,
            f"{tracker}{call.path}",
            data=call.body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=seconds),
            ssl=credentials.tls_for(tracker),
        ) as response:
            body = await response.read()
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise TrackerUnavailable(
            f"cannot reach the tracker at {tracker}: {exc or type(exc).__name__}", tracker=tracker
        ) from exc
    content_type = response.headers.get("Content-Type", "").split(";")[0]
    return call.read(tracker, response.status, response.reason or "", content_type, body)
