"""Starting an aiohttp application on an address: the one place that knows how to learn the bound port.

The application is kept apart from where it listens (aiohttp's AppRunner/TCPSite), so every service can
be embedded: in its own process, in the demo's single process, or in a test.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web


async def listen(app: web.Application, host: str, port: int, **runner_options: Any) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on host:port (0 picks a free port); return the runner (to clean up) and the port."""
    runner = web.AppRunner(app, access_log=None, **runner_options)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    sockets = getattr(site._server, "sockets", None) or []
    return runner, sockets[0].getsockname()[1] if sockets else port
