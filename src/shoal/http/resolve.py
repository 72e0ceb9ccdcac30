"""A host name's addresses, as this host resolves them: what core.push_policy checks a pushed URL with."""

from __future__ import annotations

import asyncio
import socket
from urllib.parse import urlsplit

from shoal.core.push_policy import literal

RESOLVE_SECONDS = 2.0
"""Longest wait for the resolver; past it (or when the name does not resolve) no address is known, and the
URL's fetch fails on its own if the name is bad."""


async def resolve(url: str) -> tuple[str, ...]:
    """The addresses ``url``'s host resolves to here; none for a literal address (the policy reads it from
    the URL) or a name that does not resolve in time."""
    host = urlsplit(url).hostname
    if not host or literal(host) is not None:
        return ()
    try:
        async with asyncio.timeout(RESOLVE_SECONDS):
            infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError, UnicodeError):
        return ()
    return tuple(dict.fromkeys(str(info[4][0]) for info in infos))
