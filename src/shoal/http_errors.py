"""JSON error replies shared by Shoal's HTTP services (the tracker's API, the seeder's endpoints).

A client error is ``{"error": "..."}`` with its 4xx (or a 503): a ProtocolError is a 400, an aiohttp
HTTPException keeps its status and reason, and the headers that tell a client what to do next
(Retry-After, Content-Range on a 416) are kept.
"""

from __future__ import annotations

from aiohttp import web

from shoal.core.errors import ProtocolError

_KEPT_HEADERS = ("Retry-After", "Content-Range")


def json_error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def error_response(exc: Exception) -> web.Response | None:
    """The JSON reply for a client error; None for anything else (the caller decides)."""
    if isinstance(exc, ProtocolError):
        return json_error(400, str(exc))
    if isinstance(exc, web.HTTPException) and exc.status >= 400:
        kept = {k: v for k, v in exc.headers.items() if k in _KEPT_HEADERS}
        return json_error(exc.status, exc.reason, **kept)
    return None
