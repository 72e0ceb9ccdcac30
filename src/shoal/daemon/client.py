"""The one client of the daemon's control API (shoal.daemon.control), over its Unix socket.

Every connection is checked first (shoal.daemon.socket_guard: the socket's directory and the listener's
uid); one that fails is UnsafeSocket (a DaemonUnavailable), raised before anything is sent.

Requests and replies are the structs of shoal.daemon.messages, encoded and decoded here. Foreign errors are
mapped here, at the edge, in one place: a daemon that cannot be reached, or a reply that is not the
message it should be (a daemon of another version), is DaemonUnavailable; a 4xx is a RemoteError saying
the daemon refused, with exit code 2 (the request was wrong: a destination outside the directory, a
malformed digest); a 5xx a RemoteError saying it failed; a stream's ``error`` line a RemoteError with the
daemon's message, error class and exit code, so ``shoal get`` ends as a download in its own process would.

``shoal get`` uses this before anything else: a cache hit must not pay for importing aiohttp, which costs
more than the rest of the hit (benchmarks/cache.py times one), so this module imports nothing heavier than
``http.client`` and msgspec.
"""

from __future__ import annotations

import http.client
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

import msgspec

from shoal.core.errors import DaemonUnavailable, RemoteError
from shoal.core.structs import ErrorBody
from shoal.daemon import socket_guard
from shoal.daemon.messages import (
    DaemonStatus,
    FetchFailure,
    FetchProgress,
    GetLine,
    GetRequest,
    JoinPool,
    Placed,
    PoolMembership,
    Warmed,
    WarmLine,
    WarmRequest,
)

R = TypeVar("R")
T = TypeVar("T", covariant=True)
OnProgress = Callable[[FetchProgress], None]
_FAILED = (OSError, http.client.HTTPException)
"""What a connection that breaks raises: refused, reset, closed before or in the middle of a reply."""


class Line(Protocol[T]):
    """A line of a streamed reply (GetLine, WarmLine): one of its fields is set."""

    @property
    def progress(self) -> FetchProgress | None: ...
    @property
    def result(self) -> T | None: ...
    @property
    def error(self) -> FetchFailure | None: ...


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = socket_guard.connect(self.path, self.timeout)


class DaemonClient:
    def __init__(self, path: Path, *, timeout: float | None = None) -> None:
        self.path = path
        self.timeout = timeout

    def running(self) -> bool:
        """True when a daemon accepts connections on the socket (a leftover socket file is not one).
        UnsafeSocket when the socket's directory or the process listening is not this user's (or root's):
        shoal.daemon.socket_guard's rules, which every connection checks before it sends anything."""
        try:
            socket_guard.connect(self.path, 1.0).close()
        except OSError:
            return False
        return True

    # -- the operations ------------------------------------------------------------------------------

    def status(self) -> DaemonStatus:
        return self.call("GET", "/v1/status", DaemonStatus)

    def document(self) -> dict[str, Any]:
        """The control API's OpenAPI document, as the daemon serves it."""
        return self.call("GET", "/v1/openapi.json", dict[str, Any])

    def get(
        self,
        url: str,
        dest: Path,
        *,
        headers: dict[str, str] | None = None,
        digest: str | None = None,
        progress: OnProgress | None = None,
        share: bool = False,
        ignore_qp: tuple[str, ...] = (),
        no_origin: bool = False,
    ) -> Placed:
        """Have the daemon place ``url``'s file at ``dest`` (absolute); returns its result. ``share``,
        ``ignore_qp``, ``no_origin``: see GetRequest."""
        # Normalised here: the daemon refuses a directory with "." or ".." in it rather than guess.
        directory = os.path.normpath(dest.parent)
        body = GetRequest(url, directory, dest.name, headers or {}, digest, share, list(ignore_qp), no_origin)
        return self.stream("/v1/get", body, GetLine, progress)

    def join_pool(self, name: str, token: str | None = None) -> PoolMembership:
        """Have the daemon join the pool ``name`` of its tracker until it stops (``shoal pool join``)."""
        return self.call("POST", "/v1/pools", PoolMembership, JoinPool(name, token))

    def leave_pool(self, name: str) -> PoolMembership:
        return self.call("DELETE", f"/v1/pools/{quote(name, safe='')}", PoolMembership)

    def warm(self, target: str, *, progress: OnProgress | None = None) -> Warmed:
        return self.stream("/v1/warm", WarmRequest(target), WarmLine, progress)

    # -- the transport and the one mapping of its errors ---------------------------------------------

    def call(self, method: str, target: str, reply: type[R], body: msgspec.Struct | None = None) -> R:
        """One request whose reply is one JSON document, decoded as ``reply``."""
        conn, response = self._request(method, target, body)
        try:
            raw = response.read()
        except _FAILED as exc:
            raise self._went_away(exc) from None
        finally:
            conn.close()
        return self._decode(raw, reply)

    def stream(
        self,
        target: str,
        body: msgspec.Struct,
        line: type[Line[R]],
        progress: OnProgress | None,
    ) -> R:
        """A request answered with lines (shoal.daemon.messages: progress, then a result or an error), each a
        ``line``; ``progress`` is called with each progress line. Returns the result."""
        conn, response = self._request("POST", target, body)
        try:
            for raw in response:
                item = self._decode(raw, line)
                if item.result is not None:
                    return item.result
                if item.error is not None:
                    error = item.error
                    raise RemoteError(error.message, exit_code=error.exit_code, kind=error.kind)
                if item.progress is not None and progress is not None:
                    progress(item.progress)
        except _FAILED as exc:
            raise self._went_away(exc) from None
        finally:
            conn.close()
        raise DaemonUnavailable("the daemon ended the reply without a result")

    def _request(
        self, method: str, target: str, body: msgspec.Struct | None
    ) -> tuple[_UnixConnection, http.client.HTTPResponse]:
        """Send a request; the connection and a 2xx response. The refusal's error for anything else."""
        conn = _UnixConnection(self.path, self.timeout)
        payload = None if body is None else msgspec.json.encode(body)
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        try:
            conn.request(method, target, body=payload, headers=headers)
            response = conn.getresponse()
            if 200 <= response.status < 300:
                return conn, response
            raw = response.read()
        except _FAILED as exc:
            conn.close()
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else _said(exc)
            raise DaemonUnavailable(f"cannot reach the daemon at {self.path}: {reason}") from None
        conn.close()
        raise self._refusal(response.status, response.reason, raw)

    @staticmethod
    def _refusal(status: int, reason: str, raw: bytes) -> RemoteError:
        try:
            message = msgspec.json.decode(raw, type=ErrorBody).error
        except msgspec.DecodeError:  # ValidationError too: not the API's error reply
            message = reason
        if status >= 500:
            return RemoteError(f"the daemon failed: {message} (HTTP {status})")
        return RemoteError(f"the daemon refused: {message}", exit_code=2)

    def _decode(self, raw: bytes, kind: type[R]) -> R:
        try:
            return msgspec.json.decode(raw, type=kind)
        except msgspec.DecodeError as exc:  # ValidationError too: a reply that is not the message
            raise DaemonUnavailable(
                f"the daemon at {self.path} answered something this shoal cannot read (is it another version?): {exc}"
            ) from None

    @staticmethod
    def _went_away(exc: Exception) -> DaemonUnavailable:
        return DaemonUnavailable(f"the daemon went away mid-request: {_said(exc)}")


def _said(exc: Exception) -> str:
    """An exception's words, or its class's name when it has none (http.client's often have none)."""
    return str(exc) or type(exc).__name__
