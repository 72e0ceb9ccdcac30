"""Loopback sockets as the kernel sees them, for tests that must not guess a port.

Ports come from the kernel (bind port 0, then read back what was bound), never from probing for a free
one and handing it on: between the probe and the other process's bind, any process on the machine (another
test of an xdist run, say) may take it. The helpers here read the kernel's own tables instead:

- :func:`accept_queue`: how many connections wait, unaccepted, on a listening port (proof that a server
  has not taken a connection, without sleeping on it);
- :func:`listening_ports`: the TCP ports a process listens on (for a program told port 0 that does not
  print the port it got);
- :func:`refusing_port`: a port that refuses connections for as long as it is held.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's "st" column (include/net/tcp_states.h)


def _tcp_table() -> Iterator[tuple[int, str, int, int]]:
    """(local port, state, rx_queue, inode) of every IPv4 and IPv6 TCP socket of this network namespace."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                port = int(fields[1].rsplit(":", 1)[1], 16)
                rx_queue = int(fields[4].split(":")[1], 16)
                yield port, fields[3], rx_queue, int(fields[9])


def accept_queue(port: int) -> int:
    """Connections on the listening TCP ``port`` that the kernel completed and the server has not accepted
    (for a listening socket, proc(5)'s rx_queue is its accept backlog). Raises ``LookupError`` when nothing
    listens there."""
    for local, state, rx_queue, _ in _tcp_table():
        if local == port and state == _LISTEN:
            return rx_queue
    raise LookupError(f"nothing listens on TCP port {port}")


def listening_ports(pid: int) -> set[int]:
    """The TCP ports process ``pid`` listens on (its open sockets matched in the kernel's TCP table).
    Needs the right to read ``/proc/PID/fd`` (the same user, or root)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(int(target[len("socket:[") : -1]))
    return {port for port, state, _, inode in _tcp_table() if state == _LISTEN and inode in inodes}


@contextlib.contextmanager
def refusing_port(host: str = "127.0.0.1") -> Iterator[int]:
    """A TCP port on ``host`` where connections are refused while the block runs: bound (so no other process
    can take it) but not listening."""
    with socket.socket() as held:
        held.bind((host, 0))
        yield int(held.getsockname()[1])
