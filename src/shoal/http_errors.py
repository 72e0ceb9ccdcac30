"""JSON error replies shared by Shoal's HTTP services (the tracker's API, the seeder's endpoints).

A client error is ``{"error": "..."}`` with its 4xx (or a 503): a ProtocolError gets its ``http_status``
(400, or 409 for a state machine's IllegalTransition), an aiohttp HTTPException keeps its status and
reason, and the headers that tell a client what to do next (Retry-After, Content-Range on a 416) are kept.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

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


def json_errors(
    log: logging.Logger, *, unavailable: tuple[type[Exception], ...] = (), what: str = "the database"
) -> Middleware:
    """A middleware that answers every error as JSON: client errors as :func:`error_response` says, an
    ``unavailable`` error (the service's database failing) as a 503 naming ``what``, anything else as a
    logged 500, so nothing a client sends crashes the service or leaks a traceback."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except (ProtocolError, web.HTTPException) as exc:
            response = error_response(exc)
            if response is None:
                raise
            return response
        except unavailable as exc:
            log.error("%s failed: %s", what, exc)
            return json_error(503, f"{what} is unavailable")
        except Exception:
            log.exception("unexpected error in %s %s", request.method, request.path)
            return json_error(500, "internal error")

    return middleware


def bearer_token(request: web.Request) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header; None when there is none."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None
