"""JSON error replies shared by Shoal's HTTP services (the tracker's API, the seeder's endpoints).

A client error is ``{"error": "..."}`` with its 4xx (or a 503): a ProtocolError gets its ``http_status``
(400, or 409 for a state machine's IllegalTransition), an aiohttp HTTPException keeps its status and
reason, and the headers that tell a client what to do next (Retry-After, Content-Range on a 416) are kept.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from shoal.core.errors import ProtocolError

_KEPT_HEADERS = ("Retry-After", "Content-Range")


def json_error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def error_response(exc: Exception) -> web.Response | None:
    """The JSON reply for a client error; None for anything else (the caller decides)."""
    if isinstance(exc, ProtocolError):
        return json_error(exc.http_status, str(exc))
    if isinstance(exc, web.HTTPException) and exc.status >= 400:
        kept = {k: v for k, v in exc.headers.items() if k in _KEPT_HEADERS}
        return json_error(exc.status, exc.reason, **kept)
    return None


async def read_json(request: web.Request) -> Any:
    """The request's JSON body; a ProtocolError (400) when it is not JSON, a 413 past client_max_size."""
    raw = await request.read()
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"the body is not valid JSON: {exc}") from None
