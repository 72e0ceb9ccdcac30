"""The peer's side of the tracker API: announce and hash look-ups. Bodies are core.messages' structs;
a reply becomes its message or an error by core.tracker_replies' one mapping (a refusal is
TrackerUnavailable to a peer: it can only try again), and aiohttp's errors are mapped at this edge."""

from __future__ import annotations

from typing import TypeVar

import aiohttp
import msgspec

from shoal.core.errors import TrackerUnavailable
from shoal.core.messages import AnnounceRequest, AnnounceResponse, HashesResponse
from shoal.core.tracker_replies import read_reply

TIMEOUT = aiohttp.ClientTimeout(total=10, sock_connect=3)
_JSON_BODY = {"Content-Type": "application/json"}
T = TypeVar("T")


class TrackerClient:
    def __init__(self, base_url: str, session: aiohttp.ClientSession) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session

    def _refused(self, message: str, status: int) -> TrackerUnavailable:
        return TrackerUnavailable(f"tracker answered {status}: {message}", tracker=self.base_url)

    async def _call(self, method: str, path: str, kind: type[T], body: bytes | None = None) -> T:
        url = f"{self.base_url}{path}"
        headers = _JSON_BODY if body is not None else None
        try:
            async with self.session.request(method, url, data=body, headers=headers, timeout=TIMEOUT) as resp:
                raw = await resp.read()
                reason, content_type = resp.reason or "", resp.headers.get("Content-Type", "")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise TrackerUnavailable(
                f"cannot reach the tracker at {self.base_url}: {exc or type(exc).__name__}",
                tracker=self.base_url,
            ) from exc
        return read_reply(self.base_url, resp.status, reason, content_type.split(";")[0], raw, kind, self._refused)

    async def announce(self, task_id: str, request: AnnounceRequest) -> AnnounceResponse:
        body = msgspec.json.encode(request)
        return await self._call("POST", f"/v1/tasks/{task_id}/announce", AnnounceResponse, body)

    async def hashes(self, task_id: str, since: int) -> HashesResponse:
        return await self._call("GET", f"/v1/tasks/{task_id}/hashes?since={since}", HashesResponse)
