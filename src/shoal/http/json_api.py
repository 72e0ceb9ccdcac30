"""JSON error replies shared by Shoal's HTTP services (the tracker's API, the seeder's endpoints).

A client error is ``{"error": "..."}`` with its 4xx (or a 503): a ProtocolError gets its ``http_status``
(400, or 409 for a state machine's IllegalTransition), an aiohttp HTTPException keeps its status and
reason, and the headers that tell a client what to do next (Retry-After, Content-Range on a 416) are kept.
"""

from __future__ import annotations

import json
import logging
from typing import Any, TypeVar

import msgspec
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from shoal.core.errors import ProtocolError
from shoal.core.structs import decode, strings_in
from shoal.http.limits import read_body

T = TypeVar("T")

_KEPT_HEADERS = ("Retry-After", "Content-Range", "WWW-Authenticate")

ERROR_TYPE = "application/json; charset=utf-8"
"""The Content-Type of every JSON error reply, as aiohttp's json_response writes it."""


def error_body(message: str, **fields: str) -> bytes:
    """The body of a JSON error reply (``{"error": message}``, and ``fields`` after it), written as aiohttp's
    json_response writes it (json.dumps: a space after each colon and comma, every character past ASCII
    escaped). Every error a service sends, whichever path answers it (aiohttp's handlers, the tracker's
    peers' lane: shoal.http.lane), is written by this function with ERROR_TYPE, so a client sees one form."""
    return json.dumps({"error": message, **fields}).encode()


def json_error(status: int, message: str, **headers: str) -> web.Response:
    return web.Response(status=status, body=error_body(message), headers={"Content-Type": ERROR_TYPE, **headers})


def error_response(exc: Exception) -> web.Response | None:
    """The JSON reply for a client error; None for anything else (the caller decides)."""
    if isinstance(exc, ProtocolError):
        return json_error(exc.http_status, str(exc))
    if isinstance(exc, web.HTTPException) and exc.status >= 400:
        kept = {k: v for k, v in exc.headers.items() if k in _KEPT_HEADERS}
        return json_error(exc.status, exc.reason, **kept)
    return None


def _check_strings(value: Any) -> None:
    """Refuse strings no service stores: a lone surrogate (JSON's ``"\\ud800"``) cannot be encoded for a
    database, and PostgreSQL refuses NUL. Either would fail the write, and every write committed with it."""
    for item in strings_in(value):
        if "\x00" in item:
            raise ProtocolError("the body holds a NUL character")
        try:
            item.encode()
        except UnicodeEncodeError:
            raise ProtocolError("the body holds a string that is not valid Unicode") from None


async def read_json(request: web.Request) -> Any:
    """The request's JSON body; a ProtocolError (400) when it is not JSON, or holds a string no service
    stores (see :func:`_check_strings`); a 413 past client_max_size, a 408 past the body timeout."""
    raw = await read_body(request)
    try:
        body = json.loads(raw)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an integer of over 4,300 digits
        raise ProtocolError(f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ProtocolError("the body is not valid JSON: nested too deeply") from None
    _check_strings(body)
    return body


async def read_struct(request: web.Request, kind: type[T]) -> T:
    """The request's body decoded straight into the message ``kind`` (core.structs.decode: a ProtocolError,
    a 400 at the edge, names the field at fault); a 413 past client_max_size, a 408 past the body timeout."""
    return decode(await read_body(request), kind)


def struct_response(value: Any, status: int = 200) -> web.Response:
    """A reply of the message ``value`` (a msgspec struct, or builtins holding them), encoded once."""
    return web.Response(body=msgspec.json.encode(value), status=status, content_type="application/json")


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
        except Exception as exc:
            if isinstance(exc, ConnectionResetError) and (request.transport is None or request.transport.is_closing()):
                # The client went away while its reply was being written (a streamed reply outlives many a
                # client, a Ctrl-C'd `shoal get`): nothing broke, so no traceback. The reply below goes
                # nowhere: aiohttp finds the connection gone and drops it quietly.
                log.info("%s %s: the client went away before the reply was written", request.method, request.path)
            else:
                log.exception("unexpected error in %s %s", request.method, request.path)
            return json_error(500, "internal error")

    return middleware


def bearer_token(request: web.Request) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header; None when there is none, or when it is not
    printable ASCII (RFC 6750's token68; a byte such as 0xff would break hashing and comparing it)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    usable = token.isascii() and token.isprintable()
    return token if scheme.lower() == "bearer" and token and usable else None
