"""A small synchronous client of the tracker's pool API (/v1/pools), for ``shoal pool``.

Standard library only (urllib), so the command starts quickly. Errors are mapped at this edge: a tracker
that cannot be reached or fails (a 5xx) is TrackerUnavailable (exit 3); a refusal (unknown pool, missing
or wrong token, a bad push) is a PoolRefused (a UsageError, exit 2) carrying the tracker's message and the
HTTP status. It sits beside the service whose API it calls, as daemon.client and mirror.client do.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote

from shoal.core.errors import PoolRefused, TrackerUnavailable


class PoolClient:
    def __init__(self, tracker: str, token: str | None = None, *, timeout: float = 10.0) -> None:
        self.tracker = tracker.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.tracker}/v1/pools{path}", data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body, kind = response.read(), response.headers.get_content_type()
            try:
                return json.loads(body)
            except ValueError:
                raise TrackerUnavailable.not_a_tracker(self.tracker, f"a page ({kind})") from None
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read()).get("error") or exc.reason
            except (ValueError, AttributeError):
                # The tracker's errors are JSON: this is another server.
                answered = f"{exc.code} {exc.reason} ({exc.headers.get_content_type()})"
                raise TrackerUnavailable.not_a_tracker(self.tracker, answered) from None
            if exc.code in (404, 405) and message == exc.reason:  # no such route (the API names what is unknown)
                raise TrackerUnavailable.not_a_tracker(self.tracker, f"{exc.code} {exc.reason}") from None
            if exc.code >= 500:
                raise TrackerUnavailable(
                    f"the tracker failed: {message} (HTTP {exc.code})", tracker=self.tracker
                ) from None
            raise PoolRefused(f"the tracker refused: {message} (HTTP {exc.code})", status=exc.code) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TrackerUnavailable(
                f"cannot reach the tracker at {self.tracker}: {reason}", tracker=self.tracker
            ) from None

    @staticmethod
    def _name(pool: str) -> str:
        return "/" + quote(pool, safe="")

    def create(self, pool: str, *, private: bool) -> dict[str, Any]:
        reply: dict[str, Any] = self._call("POST", "", {"name": pool, "private": private})
        return reply

    def show(self, pool: str) -> dict[str, Any]:
        reply: dict[str, Any] = self._call("GET", self._name(pool))
        return reply

    def remove(self, pool: str) -> None:
        self._call("DELETE", self._name(pool))

    def members(self, pool: str) -> list[dict[str, Any]]:
        reply: list[dict[str, Any]] = self._call("GET", f"{self._name(pool)}/members")["members"]
        return reply

    def push(
        self, pool: str, url: str, *, dest: str | None, replicas: int | None, digest: str | None
    ) -> dict[str, Any]:
        body = {"url": url, "dest": dest, "replicas": replicas, "digest": digest}
        reply: dict[str, Any] = self._call("POST", f"{self._name(pool)}/jobs", body)
        return reply

    def jobs(self, pool: str) -> list[dict[str, Any]]:
        reply: list[dict[str, Any]] = self._call("GET", f"{self._name(pool)}/jobs")["jobs"]
        return reply

    def job(self, pool: str, job: str) -> dict[str, Any]:
        reply: dict[str, Any] = self._call("GET", f"{self._name(pool)}/jobs/{quote(job, safe='')}")
        return reply

    def cancel(self, pool: str, job: str) -> dict[str, Any]:
        reply: dict[str, Any] = self._call("POST", f"{self._name(pool)}/jobs/{quote(job, safe='')}/cancel")
        return reply
