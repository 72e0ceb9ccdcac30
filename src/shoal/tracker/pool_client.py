"""The synchronous transport of the pool API's client (core.pool_api), for ``shoal pool``.

Standard library only (urllib), so the command starts quickly. The operations, their bodies and the
mapping of replies to messages or errors are core.pool_api's: a refusal (unknown pool, missing or wrong
token, a bad push) is a PoolRefused (a UsageError, exit 2); a tracker that fails (a 5xx), cannot be
reached or answers something else is TrackerUnavailable (exit 3). It sits beside the service whose API
it calls, as daemon.client and mirror.client do.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from typing import TypeVar

from shoal.core import pool_api
from shoal.core.errors import TrackerUnreachable
from shoal.core.pool_messages import (
    JobView,
    MemberView,
    PoolCreated,
    PoolSummary,
    PushRequest,
)
from shoal.core.tickets import FLEET_HEADER, FleetKey
from shoal.core.tracker_choice import TrackerChoice, parse_trackers

R = TypeVar("R")


class PoolClient:
    """The pool API at ``tracker``: one base URL or several, comma-separated (core.tracker_choice's rule:
    the next is asked when one does not answer); with ``fleet_key``, every request carries the fleet's
    credential."""

    def __init__(
        self, tracker: str, token: str | None = None, *, timeout: float = 10.0, fleet_key: FleetKey | None = None
    ) -> None:
        self.trackers = TrackerChoice(parse_trackers(tracker))
        self.token = token
        self.timeout = timeout
        self.fleet_key = fleet_key

    def run(self, call: pool_api.Call[R]) -> R:
        """Send ``call`` and read its reply (core.pool_api's mapping). This is http.tracker_failover's loop
        without the event loop: ``shoal pool`` makes a call or two and exits, so it logs nothing."""
        failed: dict[int, TrackerUnreachable] = {}
        while (index := self.trackers.next_try(failed)) is not None:
            try:
                return self._at(self.trackers.urls[index], call)
            except TrackerUnreachable as exc:
                failed[index] = exc
                self.trackers.failed(index)
        raise self.trackers.all_failed(failed)

    def _at(self, tracker: str, call: pool_api.Call[R]) -> R:
        request = urllib.request.Request(f"{tracker}{call.path}", data=call.body, method=call.method)
        request.add_header("Accept", "application/json")
        if call.body is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        for name, value in call.headers:
            request.add_header(name, value)
        if self.fleet_key is not None:
            request.add_header(FLEET_HEADER, self.fleet_key.credential(time.time()))
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                status, reason, headers, body = response.status, response.reason, response.headers, response.read()
        except urllib.error.HTTPError as exc:
            status, reason, headers, body = exc.code, exc.reason, exc.headers, exc.read()
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TrackerUnreachable(f"cannot reach the tracker at {tracker}: {reason}", tracker=tracker) from None
        return call.read(tracker, status, str(reason), headers.get_content_type(), body)

    def create(self, pool: str, *, private: bool, allow: list[str] | None = None) -> PoolCreated:
        return self.run(pool_api.create(pool, private=private, allow=allow))

    def pools(self) -> list[PoolSummary]:
        return self.run(pool_api.listing()).pools

    def remove(self, pool: str) -> None:
        self.run(pool_api.remove(pool))

    def members(self, pool: str) -> list[MemberView]:
        return self.run(pool_api.members(pool)).members

    def push(self, pool: str, request: PushRequest) -> JobView:
        return self.run(pool_api.push(pool, request))

    def jobs(self, pool: str) -> list[JobView]:
        return self.run(pool_api.jobs(pool)).jobs

    def job(self, pool: str, job: str) -> JobView:
        return self.run(pool_api.job(pool, job))

    def cancel(self, pool: str, job: str) -> JobView:
        return self.run(pool_api.cancel(pool, job))
