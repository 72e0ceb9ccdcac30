"""Rolling the fleet token without an outage: a long-running process reads its token file again when it
changes, and a service at once on SIGHUP (a ``shoal get`` seeding for a while reads it on a change only).

The token file may hold several tokens (core.tickets, Rotation): the first signs, every one verifies. The
operator's steps, each rolled out to every host before the next: add the new token second; make it first;
remove the old one. A host that has not seen a step yet still checks and is checked by the hosts that have,
so no step refuses anyone. The keyring is updated in place (``FleetKey.replace_tokens``): the tracker's
middleware, the piece server's ticket checks, the credentials and tickets a process makes all use the new
tokens from the next request on.

The file's identity (inode, size, modification time) is looked at every RELOAD_SECONDS, a stat and nothing
more; SIGHUP reloads whatever the stat says (an edit that kept all three). A file that cannot be used (open
to others, emptied, a token too short) is refused with a warning and the tokens in force are kept: a
half-written file never locks the fleet out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator

from shoal.core.errors import UsageError
from shoal.http.credentials import Credentials, read_tokens

log = logging.getLogger("shoal.fleet")

RELOAD_SECONDS = 1.0
"""How often the token file's identity is looked at."""


def _identity(path: str) -> tuple[int, int, int] | None:
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_ino, found.st_size, found.st_mtime_ns


async def _watch(credentials: Credentials, path: str, hangup: asyncio.Event) -> None:
    key = credentials.key
    assert key is not None
    seen = _identity(path)
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(hangup.wait(), RELOAD_SECONDS)
        asked, current = hangup.is_set(), _identity(path)
        hangup.clear()
        if not asked and current == seen:
            continue
        seen = current
        try:
            tokens = await asyncio.to_thread(read_tokens, path)
        except UsageError as exc:
            log.warning("fleet token file not reloaded, the tokens in force are kept: %s", exc)
            continue
        key.replace_tokens(tokens)
        log.info("fleet token file %s reloaded: %d token%s", path, len(tokens), "s" if len(tokens) > 1 else "")


@contextlib.asynccontextmanager
async def reloading(credentials: Credentials, *, on_sighup: bool = True) -> AsyncIterator[None]:
    """While the block runs, ``credentials``' token file is read again when it changes, and on SIGHUP when
    ``on_sighup``; a process without a token file runs the block as it is.

    A service takes SIGHUP (its unit's reload). A ``shoal get`` (and the Python API's ``get``) does not: a
    command in a terminal must still end when the terminal goes, and a library must not take a process's
    signals; it reads a changed file all the same."""
    path = credentials.token_file
    if credentials.key is None or path is None:
        yield
        return
    loop = asyncio.get_running_loop()
    hangup = asyncio.Event()
    if on_sighup:
        loop.add_signal_handler(signal.SIGHUP, hangup.set)
    watcher = asyncio.create_task(_watch(credentials, path, hangup))
    try:
        yield
    finally:
        watcher.cancel()
        if on_sighup:
            loop.remove_signal_handler(signal.SIGHUP)
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
