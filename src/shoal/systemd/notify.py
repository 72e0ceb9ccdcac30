"""Telling the service manager how a service is doing: sd_notify(3), without libsystemd.

A service of ``Type=notify`` is started with ``$NOTIFY_SOCKET``, the address of a datagram socket (a path,
or with a leading ``@`` a name in the abstract namespace). Each state is one datagram of ``KEY=VALUE``
lines: ``READY=1`` once the service serves (so units ordered after it start only then), ``RELOADING=1``
and then ``READY=1`` around a reload, ``STOPPING=1`` when it begins to stop, ``STATUS=...`` for
``systemctl status``.

Rules, and why:

- The variable is read once and removed from the environment, as sd_notify's ``unset_environment`` does:
  the commands a service runs (mirror hooks, a ``--callback``) must not speak for it.
- Without the variable every call does nothing, so the services call these unconditionally.
- A failed send is logged and forgotten: systemd then times the start out, which says more than a crash.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import time

log = logging.getLogger(__name__)

SOCKET_ENV = "NOTIFY_SOCKET"


@functools.cache
def _address() -> str | None:
    """The socket's address, taken out of the environment at the first call."""
    value = os.environ.pop(SOCKET_ENV, "")
    if not value:
        return None
    return "\0" + value[1:] if value.startswith("@") else value


def notify(*states: str) -> bool:
    """Send ``states`` (``"READY=1"``, ...) as one datagram; False when there is no one to tell or the send
    failed."""
    address = _address()
    if address is None:
        return False
    message = "\n".join(states).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message, address)
    except OSError as exc:
        log.warning("could not tell the service manager %s: %s", " ".join(states), exc.strerror or exc)
        return False
    return True


def ready(status: str = "") -> bool:
    """The service serves: ``READY=1``, with ``status`` for ``systemctl status``."""
    return notify("READY=1", *([f"STATUS={status}"] if status else []))


def reloading() -> bool:
    """A reload begins (``READY=1`` again when it is over). ``MONOTONIC_USEC`` tells systemd which reload
    this is; newer versions require it of ``Type=notify-reload`` services."""
    return notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")


def stopping() -> bool:
    """The service begins to stop."""
    return notify("STOPPING=1", "STATUS=stopping")
