"""The system's CA certificates, loaded when HTTPS is first used rather than when aiohttp is imported.

aiohttp (3.10 on) builds its two default TLS contexts, one that verifies and one that does not, when its
connector module is imported, and each loads the system's CA certificates. With OpenSSL 3.0 a load costs
tens of milliseconds of CPU (python/cpython#95031), a share worth saving of what a ``shoal get`` spends
before its first request: when peers start together on few cores, start-up is CPU time, and the deferred
load lets the origin's first byte leave sooner (benchmarks/swarm_lab.py; figures in benchmarks/RESULTS.md).
Shoal's own traffic, to its tracker and its peers, is plain HTTP; only an https origin (or tracker) needs
the certificates.

``with deferred_roots():`` around the import of aiohttp keeps the contexts built meanwhile without their
certificates and records them. :func:`load_roots` loads the certificates into those same contexts, so
aiohttp's defaults then verify exactly as before, and the client middleware :func:`load_roots_first`
does it before a session's first https request (redirects included: aiohttp runs middlewares for each
hop). A request made through a session without that middleware fails verification; it never goes
unverified. Only the ``shoal get`` command defers, and its one session has the middleware: a program that
imports Shoal gets aiohttp's own behaviour.
"""

from __future__ import annotations

import contextlib
import ssl
import sys
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiohttp import ClientHandlerType, ClientRequest, ClientResponse

_deferred: list[ssl.SSLContext] = []
_lock = threading.Lock()


@contextlib.contextmanager
def deferred_roots() -> Iterator[None]:
    """Import aiohttp in this block: TLS contexts created meanwhile skip ``set_default_verify_paths`` (the
    load of the default CA certificates) and are recorded for :func:`load_roots`.

    For a command's start, before any other thread runs. Nothing is deferred once aiohttp is imported."""
    if "aiohttp" in sys.modules:
        yield
        return
    own = ssl.SSLContext.__dict__.get("set_default_verify_paths")  # None: inherited from _ssl._SSLContext

    def record(context: ssl.SSLContext) -> None:
        _deferred.append(context)

    setattr(ssl.SSLContext, "set_default_verify_paths", record)  # noqa: B010 (a method, replaced for the block)
    try:
        yield
    finally:
        if own is None:
            delattr(ssl.SSLContext, "set_default_verify_paths")
        else:
            setattr(ssl.SSLContext, "set_default_verify_paths", own)  # noqa: B010


def load_roots() -> None:
    """Load the default CA certificates into every context :func:`deferred_roots` recorded (blocking: it
    reads them from disk); once, from any thread."""
    with _lock:
        while _deferred:
            _deferred[-1].set_default_verify_paths()
            _deferred.pop()


async def load_roots_first(request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
    """Client middleware (``ClientSession(middlewares=...)``): the certificates are in place before an https
    request connects."""
    if _deferred and request.is_ssl():
        import asyncio  # loaded by now: a client middleware runs on the event loop

        await asyncio.to_thread(load_roots)
    return await handler(request)
