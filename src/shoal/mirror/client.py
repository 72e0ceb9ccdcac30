"""A client of the mirror manager's HTTP API (shoal.mirror.manager_http), for workers and ``shoal mirror ctl``.

Foreign errors are mapped here, at the edge: a manager that cannot be reached is TrackerUnavailable (exit
3: the manager is the fleet's control service, as the tracker is); a reply of 400 or 404 is a UsageError
(the user named something wrong), 401 a UsageError about the token, 409 a ManagerRefused (exit 1) with
the manager's reason, and anything else that is not JSON a TrackerUnavailable.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self
from urllib.parse import quote, urlsplit

import aiohttp

from shoal.core.errors import ManagerRefused, TrackerUnavailable, UsageError


class MirrorClient:
    """``async with MirrorClient(url, token) as client``; every method returns the reply's JSON object."""

    def __init__(self, base_url: str, token: str | None = None, *, timeout: float = 30.0) -> None:
        if urlsplit(base_url).scheme not in ("http", "https") or not urlsplit(base_url).hostname:
            raise UsageError(f"the manager's URL must be http(s)://HOST:PORT, not {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self._session = aiohttp.ClientSession(headers=headers)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, seconds: float | None = None
    ) -> dict[str, Any]:
        if self._session is None:
            raise RuntimeError("use 'async with MirrorClient(...)'")
        url = f"{self.base_url}/v1/mirror/{path}"
        try:
            async with self._session.request(
                method, url, json=body, timeout=aiohttp.ClientTimeout(total=seconds or self.timeout)
            ) as resp:
                try:
                    data = await resp.json(content_type=None)
                except ValueError:
                    data = None
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise TrackerUnavailable(
                f"cannot reach the mirror manager at {self.base_url}: {exc or type(exc).__name__}",
                tracker=self.base_url,
            ) from None
        if not isinstance(data, dict):
            raise TrackerUnavailable(
                f"the mirror manager at {self.base_url} answered {status} without a JSON object", tracker=self.base_url
            )
        if status < 300:
            return data
        message = str(data.get("error", f"HTTP {status}"))
        if status == 401:
            raise UsageError(f"the mirror manager refused the token: {message} (see --token, $SHOAL_MIRROR_TOKEN)")
        if status in (400, 404, 413):
            raise UsageError(message)
        if status == 409:
            raise ManagerRefused(message, status=status, register=bool(data.get("register")))
        raise TrackerUnavailable(f"the mirror manager answered {status}: {message}", tracker=self.base_url)

    # -- ctl -----------------------------------------------------------------------------------------

    async def jobs(self, *, include_disabled: bool = False, status: str | None = None) -> list[dict[str, Any]]:
        query = [f"all={int(include_disabled)}"] + ([f"status={quote(status)}"] if status else [])
        return list((await self.call("GET", "jobs?" + "&".join(query)))["jobs"])

    async def job_action(self, job: str, action: str, *, force: bool = False) -> dict[str, Any]:
        return await self.call("POST", f"jobs/{quote(job, safe='')}/{action}", {"force": True} if force else None)

    async def reload(self, worker: str | None = None) -> dict[str, Any]:
        return await self.call("POST", "reload", {"worker": worker} if worker else None)

    async def workers(self) -> list[dict[str, Any]]:
        return list((await self.call("GET", "workers"))["workers"])

    async def remove_worker(self, name: str) -> dict[str, Any]:
        return await self.call("DELETE", f"workers/{quote(name, safe='')}")

    async def flush(self) -> dict[str, Any]:
        return await self.call("POST", "flush")

    # -- the worker protocol -------------------------------------------------------------------------

    async def register(self, name: str, url: str, concurrency: int, running: list[dict[str, str]]) -> dict[str, Any]:
        body = {"url": url, "concurrency": concurrency, "running": running}
        return await self.call("POST", f"workers/{quote(name, safe='')}/register", body)

    async def poll(self, name: str, session: str, ack: int, hold: float) -> list[dict[str, Any]]:
        reply = await self.call(
            "POST", f"workers/{quote(name, safe='')}/poll", {"session": session, "ack": ack}, seconds=hold + 15
        )
        return list(reply.get("commands", []))

    async def report(self, job: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self.call("POST", f"jobs/{quote(job, safe='')}/report", body)
