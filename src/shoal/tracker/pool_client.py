"""The synchronous transport of the pool API's client (core.pool_api), for ``shoal pool``, and the Python API
over it (``shoal.Pool``).

Standard library only (urllib), so the command starts quickly. The operations, their bodies and the
mapping of replies to messages or errors are core.pool_api's: a refusal (unknown pool, missing or wrong
token, a bad push) is a PoolRefused (a UsageError, exit 2); a tracker that fails (a 5xx), cannot be
reached or answers something else is TrackerUnavailable (exit 3). It sits beside the service whose API
it calls, as daemon.client and mirror.client do.
"""

from __future__ import annotations

import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from typing import TypeVar

from shoal.core import pool_api
from shoal.core.errors import TrackerUnreachable, UsageError
from shoal.core.pool import PushStatus
from shoal.core.pool_messages import (
    JobView,
    MemberView,
    PoolCreated,
    PoolSummary,
    PushRequest,
)
from shoal.core.tickets import FLEET_HEADER, FleetKey
from shoal.core.tracker_choice import TrackerChoice, parse_trackers
from shoal.core.whole_file import parse_user_digest

R = TypeVar("R")
WATCH_SECONDS = 0.5
"""How often a watch asks for a job's status: members report twice a second."""


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

    def watch(self, pool: str, job: str, *, every: float = WATCH_SECONDS) -> Iterator[JobView]:
        """The job's status every ``every`` seconds, until (and including) the first that has ended."""
        while True:
            view = self.job(pool, job)
            yield view
            if view.status is not PushStatus.RUNNING:
                return
            time.sleep(every)


class Pool:
    """A pool on a tracker, as a Python API (dragonload's model)::

        pool = shoal.Pool("http://tracker:6969", "edge", token=...)   # $SHOAL_POOL_TOKEN by default
        job = pool.push("http://origin/release.tar", digest="sha256:...", replicas=3)
        pool.status(job)                                    # the job member by member (a JobView)
        for view in pool.watch(job): ...                    # snapshots until it ends
        pool.ls()                                           # the tracker's pools this token may read
        pool.close()

    It asks the tracker on first use (the tracker list and the fleet token file are read then), and
    ``close()`` lets that go, as ``shoal.Cache`` does: a closed pool opens again on its next use, and
    ``with shoal.Pool(...) as pool:`` closes it at the end of the block. Every call is one or two HTTP
    requests of ``shoal pool``'s client (PoolClient); a refusal is a PoolRefused (a UsageError) with the
    tracker's reason, a tracker that does not answer a TrackerUnavailable."""

    def __init__(
        self,
        tracker: str | None = None,
        name: str | None = None,
        *,
        token: str | None = None,
        fleet_token_file: str | os.PathLike[str] | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.tracker = tracker if tracker is not None else os.environ.get("SHOAL_TRACKER") or None
        self.name = name
        self.token = token if token is not None else os.environ.get("SHOAL_POOL_TOKEN") or None
        self.fleet_token_file = fleet_token_file or os.environ.get("SHOAL_FLEET_TOKEN_FILE") or None
        self.timeout = timeout
        self._client: PoolClient | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Let the client go; the next call makes it again. Closing a closed pool does nothing."""
        with self._lock:
            self._client = None

    def ls(self) -> list[PoolSummary]:
        """The tracker's pools this pool's token may read: every public one, and private ones it opens."""
        return self._opened().pools()

    def create(self, *, private: bool = False, allow: Iterable[str] = ()) -> str:
        """Create this pool on the tracker (with the operator's token, when the tracker has one); the pool's
        token, shown once: pushes, cancels and removal need it (``shoal.Pool(..., token=...)``) or the
        operator's."""
        created = self._opened().create(self._named(), private=private, allow=list(allow))
        assert created.token is not None  # the tracker returns it on creation
        return created.token

    def members(self) -> list[MemberView]:
        return self._opened().members(self._named())

    def push(self, url: str, *, dest: str | None = None, replicas: int | None = None, digest: str | None = None) -> str:
        """Make the members fetch ``url`` into their caches (``replicas`` of them; all when None), checking
        ``digest`` (``ALGORITHM:HEX``, any algorithm of ``shoal get --digest``) and placing the file at
        ``dest`` on each; the job's id."""
        checked = parse_user_digest(digest) if digest is not None else None
        return self._opened().push(self._named(), PushRequest(url, dest, replicas, checked)).job

    def status(self, job: str) -> JobView:
        """The job's status, member by member."""
        return self._opened().job(self._named(), job)

    def jobs(self) -> list[JobView]:
        return self._opened().jobs(self._named())

    def watch(self, job: str, *, every: float = WATCH_SECONDS) -> Iterator[JobView]:
        """The job's status every ``every`` seconds, until (and including) the first that has ended:
        ``complete``, ``failed`` or ``cancelled``."""
        return self._opened().watch(self._named(), job, every=every)

    def cancel(self, job: str) -> JobView:
        return self._opened().cancel(self._named(), job)

    def remove(self) -> None:
        """Remove this pool from the tracker, its members and jobs."""
        self._opened().remove(self._named())

    def _named(self) -> str:
        if self.name is None:
            raise UsageError("this Pool names no pool: shoal.Pool(tracker, NAME)")
        return self.name

    def _opened(self) -> PoolClient:
        with self._lock:
            if self._client is None:
                if self.tracker is None:
                    raise UsageError("no tracker: give shoal.Pool a tracker URL or set $SHOAL_TRACKER")
                from shoal.http.credentials import read_token_file

                key = read_token_file(self.fleet_token_file) if self.fleet_token_file else None
                self._client = PoolClient(self.tracker, self.token, timeout=self.timeout, fleet_key=key)
            return self._client
