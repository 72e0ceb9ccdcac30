"""The server side of fleet credentials: a middleware that lets only the fleet in.

:func:`require_fleet` is an aiohttp middleware for any JSON service of the fleet (the tracker's API, and its
pools' routes, which it covers). A request without a valid request credential (core.tickets) is a 401 with
a JSON error that says what is wrong (``{"error": ..., "credential": "fleet"}``: clients tell it from a
private pool's 401 by the second key), before its body is read and before it takes any other resource.
The health and OpenAPI routes stay open: monitoring and discovery reveal nothing of the fleet's files.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from shoal.core.errors import CredentialRefused
from shoal.core.tickets import FLEET_HEADER, FleetKey
from shoal.http.json_api import ERROR_TYPE, error_body

OPEN_PATHS = frozenset({"/v1/health", "/v1/openapi.json"})
"""Routes answered without a credential."""


def require_fleet(
    key: FleetKey,
    *,
    clock: Callable[[], float] = time.time,
    guarded: Callable[[str], bool] = lambda path: path.startswith("/v1/"),
) -> Middleware:
    """A middleware answering 401 to a request to a ``guarded`` path, other than OPEN_PATHS, that carries no
    valid credential of ``key``'s fleet."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if guarded(path) and path not in OPEN_PATHS:
            try:
                key.check_credential(request.headers.get(FLEET_HEADER), clock())
            except CredentialRefused as exc:
                return web.Response(status=401, body=refusal(exc), headers={"Content-Type": ERROR_TYPE})
        return await handler(request)

    return middleware


def refusal(exc: CredentialRefused) -> bytes:
    """The body of a 401 for a request without a valid credential of the fleet (a JSON error, ERROR_TYPE)."""
    return error_body(str(exc), credential="fleet")
