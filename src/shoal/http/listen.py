"""Starting an aiohttp application on an address: the one place that knows how to learn the bound port.

The application is kept apart from where it listens (aiohttp's AppRunner/TCPSite), so every service can
be embedded: in its own process, in the demo's single process, or in a test. Every one is served under
the limits of :mod:`shoal.http.limits` (timeouts, request sizes, the open-file limit).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from collections.abc import Callable
from typing import Any

from aiohttp import web

from shoal.core.errors import ListenError
from shoal.http.lane import LANE, LaneSite
from shoal.http.limits import Runner
from shoal.systemd import notify

ON_LISTENING = web.AppKey("on_listening", list)
"""Callbacks an application is given the port it listens on once it does (a service that tells others where
it can be reached: the port is known only then when it was 0)."""


def access_log_options() -> dict[str, Any]:
    """The runner options that log one line per request: aiohttp's access logger (its default format:
    address, time, request line, status, size, referer, user agent), at INFO whatever ``-v`` says, through
    the command's log handler and so in its format (``--log-format json`` adds each field on its own)."""
    logger = logging.getLogger("aiohttp.access")
    logger.setLevel(logging.INFO)
    return {"access_log": logger}


async def listen(
    app: web.Application, host: str, port: int, *, tls: ssl.SSLContext | None = None, **runner_options: Any
) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on host:port (0 picks a free port), over TLS with ``tls``; return the runner (to clean
    up) and the port. An address that cannot be had is a ListenError. ``runner_options`` go to
    :class:`shoal.http.limits.Runner` (aiohttp's AppRunner options, and ``limits``)."""
    runner = Runner(app, **runner_options)
    await runner.setup()
    try:
        # A lane logs no request: with an access log, every request goes through aiohttp's logger.
        lane = app.get(LANE) if runner_options.get("access_log") is None else None
        if lane is None:
            site = web.TCPSite(runner, host, port, ssl_context=tls)
        else:
            site = LaneSite(runner, host, port, lane, ssl_context=tls)
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ListenError.from_os_error(f"{host}:{port}", exc) from None
    except BaseException:
        await runner.cleanup()
        raise
    sockets = getattr(site._server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    for callback in app.get(ON_LISTENING, ()):
        callback(bound)
    return runner, bound


async def until_signalled(listening: str = "", on_hangup: Callable[[], None] | None = None) -> None:
    """Return on SIGINT or SIGTERM, having told the service manager the service is stopping: how every
    long-running command ends cleanly. With ``on_hangup``, SIGHUP calls it (a service re-reads its config,
    as daemons do on ``systemctl reload``) instead of ending the process, which is SIGHUP's default action.

    ``listening`` (``NAME listening on URL ...``) is printed, and sent to the service manager as the
    status of ``READY=1`` (shoal.systemd.notify), once the signal handlers are in place: whoever acts on
    the line (a test, systemd) may stop the service at once. That line is the contract with whoever started
    the process (tests, benchmarks, operators' scripts): with port 0 it is the only way to learn the port.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if on_hangup is not None:
        loop.add_signal_handler(signal.SIGHUP, on_hangup)
    if listening:
        print(listening, flush=True)
        notify.ready(listening)
    try:
        await stop.wait()
    finally:
        if on_hangup is not None:
            loop.remove_signal_handler(signal.SIGHUP)
    notify.stopping()


async def serve(
    app: web.Application,
    host: str,
    port: int,
    name: str,
    detail: str = "",
    *,
    tls: ssl.SSLContext | None = None,
    on_hangup: Callable[[], None] | None = None,
    **runner_options: Any,
) -> None:
    """Serve ``app`` until SIGINT or SIGTERM (SIGHUP calls ``on_hangup``, when given), first saying
    ``NAME listening on http://HOST:PORT`` (https with ``tls``; :func:`until_signalled`). ``runner_options``
    go to :func:`listen`.
    """
    runner, bound = await listen(app, host, port, tls=tls, **runner_options)
    try:
        scheme = "https" if tls is not None else "http"
        await until_signalled(f"{name} listening on {scheme}://{host}:{bound}{detail}", on_hangup)
    finally:
        await runner.cleanup()
