"""The peer's side of the tracker API: announce and hash look-ups, with aiohttp errors mapped to
TrackerUnavailable at this edge."""

from __future__ import annotations

import json

import aiohttp

from shoal.core.errors import ProtocolError, TrackerUnavailable
from shoal.core.messages import AnnounceRequest, AnnounceResponse, HashesResponse

TIMEOUT = aiohttp.ClientTimeout(total=10, sock_connect=3)


class TrackerClient:
    def __init__(self, base_url: str, session: aiohttp.ClientSession) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session

    async def _call(self, method: str, path: str, body: object = None) -> object:
        url = f"{self.base_url}{path}"
        try:
            async with self.session.request(method, url, json=body, timeout=TIMEOUT) as resp:
                text = await resp.text()
                status = f"{resp.status} {resp.reason or ''}".strip()
                try:
                    data = json.loads(text)
                except ValueError:
                    # The tracker answers JSON, its errors included: anything else is another server.
                    answered = f"{status if resp.status >= 400 else 'a page'} ({resp.content_type or 'no type'})"
                    raise TrackerUnavailable.not_a_tracker(self.base_url, answered) from None
                if resp.status >= 400:
                    error = data.get("error") if isinstance(data, dict) else None
                    if resp.status in (404, 405) and error in (None, resp.reason):
                        # No such route (the tracker names what is unknown, an unknown task say): the
                        # base URL is not the tracker's, a Shoal tracker's /announce for one.
                        raise TrackerUnavailable.not_a_tracker(self.base_url, status)
                    message = " ".join(str(error).split()) if error else "no reason given"
                    raise TrackerUnavailable(f"tracker answered {status}: {message}", tracker=self.base_url)
                return data
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise TrackerUnavailable(
                f"cannot reach the tracker at {self.base_url}: {exc or type(exc).__name__}",
                tracker=self.base_url,
            ) from exc

    async def announce(self, task_id: str, request: AnnounceRequest) -> AnnounceResponse:
        data = await self._call("POST", f"/v1/tasks/{task_id}/announce", request.to_json())
        try:
            return AnnounceResponse.from_json(data)
        except ProtocolError as exc:
            raise TrackerUnavailable(f"tracker sent a malformed announce reply: {exc}", tracker=self.base_url) from exc

    async def hashes(self, task_id: str, since: int) -> HashesResponse:
        data = await self._call("GET", f"/v1/tasks/{task_id}/hashes?since={since}")
        try:
            return HashesResponse.from_json(data)
        except ProtocolError as exc:
            raise TrackerUnavailable(f"tracker sent malformed hashes: {exc}", tracker=self.base_url) from exc
