"""Talking to a running daemon over its control socket, with the standard library only.

``shoal get`` uses this before anything else: a cache hit must not pay for importing aiohttp, which costs
more than the rest of the hit (benchmarks/cache.py times one), so this module imports nothing heavier than
``http.client``.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shoal.core.errors import DaemonUnavailable, RemoteError


@dataclass(frozen=True, slots=True)
class FetchProgress:
    """A progress line from the daemon (the same fields as a download's Stats)."""

    total: int = 0
    done: int = 0
    from_origin: int = 0
    from_peers: int = 0
    peers: int = 0


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.path))
        except OSError:
            sock.close()
            raise
        self.sock = sock


class DaemonClient:
    def __init__(self, path: Path, *, timeout: float | None = None) -> None:
        self.path = path
        self.timeout = timeout

    def running(self) -> bool:
        """True when a daemon accepts connections on the socket (a leftover socket file is not one)."""
        if not self.path.exists():
            return False
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(1.0)
            sock.connect(str(self.path))
            return True
        except OSError:
            return False
        finally:
            sock.close()

    def _request(self, method: str, target: str, body: object = None) -> tuple[_UnixConnection, Any]:
        conn = _UnixConnection(self.path, self.timeout)
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        try:
            conn.request(method, target, body=payload, headers=headers)
            response = conn.getresponse()
        except OSError as exc:
            conn.close()
            raise DaemonUnavailable(f"cannot reach the daemon at {self.path}: {exc.strerror or exc}") from None
        if response.status != 200:
            try:
                message = json.loads(response.read()).get("error", "")
            except (ValueError, AttributeError):
                message = ""
            conn.close()
            raise RemoteError(f"the daemon refused: {message or response.reason}", exit_code=2)
        return conn, response

    def status(self) -> dict[str, Any]:
        conn, response = self._request("GET", "/v1/status")
        try:
            return dict(json.loads(response.read()))
        finally:
            conn.close()

    def get(
        self,
        url: str,
        dest: Path,
        *,
        headers: dict[str, str] | None = None,
        digest: str | None = None,
        progress: Callable[[FetchProgress], None] | None = None,
    ) -> dict[str, Any]:
        """Have the daemon place ``url``'s file at ``dest`` (absolute); returns its result."""
        # Normalised here: the daemon refuses a directory with "." or ".." in it rather than guess.
        directory = os.path.normpath(dest.parent)
        body = {"url": url, "dest_dir": directory, "name": dest.name, "headers": headers or {}, "digest": digest}
        return self._stream("/v1/get", body, progress)

    def warm(self, target: str, *, progress: Callable[[FetchProgress], None] | None = None) -> dict[str, Any]:
        return self._stream("/v1/warm", {"target": target}, progress)

    def _stream(self, target: str, body: object, progress: Callable[[FetchProgress], None] | None) -> dict[str, Any]:
        conn, response = self._request("POST", target, body)
        try:
            for raw in response:
                line = json.loads(raw)
                if "progress" in line:
                    if progress is not None:
                        progress(FetchProgress(**line["progress"]))
                elif "result" in line:
                    return dict(line["result"])
                elif "error" in line:
                    error = line["error"]
                    raise RemoteError(error["message"], exit_code=int(error["exit_code"]), kind=error.get("kind", ""))
        except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
            raise DaemonUnavailable(f"the daemon went away mid-request: {exc or type(exc).__name__}") from None
        finally:
            conn.close()
        raise DaemonUnavailable("the daemon ended the reply without a result")
