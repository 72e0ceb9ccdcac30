"""A real rsync daemon on loopback, for the rsync providers' tests and benchmarks.

rsyncd reads ``port = 0`` as "the default port, 873", so it cannot be told to take a port from the kernel.
It is run the other way its manual documents, from a super-server (inetd mode): this helper binds a
listening socket to port 0 on 127.0.0.1, and for each connection starts ``rsync --daemon`` with that
connection as its standard input and output. Each connection is served by Debian's own rsync, reading
the rsyncd.conf written here: modules are read-only and chroot-less, and may require a user and password
(a secrets file of mode 0600, as rsyncd insists).

A test that needs rsync stopped in the middle of a transfer (to make a file vanish between the file list
and its turn, say) sets a ``Gate``: the next connection is relayed through this process, which stops
passing the daemon's bytes on after ``after`` of them until the test opens the gate. The daemon then
blocks in its write, at a known point of the transfer, with no sleep and no race.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

RSYNC = shutil.which("rsync") or "/usr/bin/rsync"


@dataclass(frozen=True)
class Module:
    path: Path
    user: str | None = None
    password: str | None = None


@dataclass
class Gate:
    """Hold the daemon's output after ``after`` bytes until ``open()``; ``held`` is set once it holds."""

    after: int
    held: threading.Event = field(default_factory=threading.Event)
    _open: threading.Event = field(default_factory=threading.Event)

    def open(self) -> None:
        self._open.set()

    def pass_on(self, source: socket.socket, sink: socket.socket) -> None:
        """Copy ``source`` to ``sink`` until EOF, holding once ``after`` bytes went through."""
        sent = 0
        while sent < self.after and (data := source.recv(min(65536, self.after - sent))):
            sink.sendall(data)
            sent += len(data)
        self.held.set()
        self._open.wait()
        _copy(source, sink)


def _copy(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):  # either end went away (a test stopped its rsync): the relay is over
        while data := source.recv(65536):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)


@dataclass
class RsyncDaemon:
    port: int
    conf: Path
    connections: list[subprocess.Popen[bytes]] = field(default_factory=list)
    """The ``rsync --daemon`` processes started so far, one per connection."""
    gate: Gate | None = None
    """Set by a test: the next connection is relayed through it."""

    def url(self, module: str, path: str = "") -> str:
        """``rsync://127.0.0.1:PORT/MODULE/`` (or ``.../MODULE/PATH/``), as the rsync providers take it."""
        inside = path.strip("/")
        return f"rsync://127.0.0.1:{self.port}/{module}/" + (f"{inside}/" if inside else "")


def _conf(workdir: Path, modules: Mapping[str, Module]) -> str:
    lines = ["use chroot = no", f"log file = {workdir / 'rsyncd.log'}"]
    if os.geteuid() == 0:  # as root rsyncd would serve as nobody, who may not read the test's files
        lines += ["uid = root", "gid = root"]
    secrets = []
    for name, module in modules.items():
        lines += [f"[{name}]", f"path = {module.path}", "read only = yes"]
        if module.user is not None:
            lines += [f"auth users = {module.user}", f"secrets file = {workdir / 'rsyncd.secrets'}"]
            secrets.append(f"{module.user}:{module.password}")
    if secrets:
        path = workdir / "rsyncd.secrets"
        path.write_text("\n".join(secrets) + "\n")
        path.chmod(0o600)
    return "\n".join(lines) + "\n"


def _serve(listener: socket.socket, daemon: RsyncDaemon) -> None:
    while True:
        try:
            connection, _ = listener.accept()
        except OSError:  # the listener was closed: the block is over
            return
        gate, daemon.gate = daemon.gate, None
        if gate is None:
            with connection:
                daemon.connections.append(_start(daemon.conf, connection))
            continue
        ours, theirs = socket.socketpair()
        with theirs:
            daemon.connections.append(_start(daemon.conf, theirs))
        threading.Thread(target=_relay, args=(connection, ours, gate), daemon=True).start()


def _relay(client: socket.socket, daemon: socket.socket, gate: Gate) -> None:
    with client, daemon:
        upstream = threading.Thread(target=_copy, args=(client, daemon), daemon=True)
        upstream.start()
        with contextlib.suppress(OSError):  # as in _copy
            gate.pass_on(daemon, client)
        upstream.join()


def _start(conf: Path, connection: socket.socket) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [RSYNC, "--daemon", f"--config={conf}"], stdin=connection.fileno(), stdout=connection.fileno()
    )


@contextlib.contextmanager
def rsync_daemon(workdir: Path, modules: Mapping[str, Module]) -> Iterator[RsyncDaemon]:
    """Serve ``modules`` with rsync's daemon (its config and log in ``workdir``) until the block ends."""
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "rsyncd.conf"
    conf.write_text(_conf(workdir, modules))
    listener = socket.create_server(("127.0.0.1", 0))
    daemon = RsyncDaemon(listener.getsockname()[1], conf)
    thread = threading.Thread(target=_serve, args=(listener, daemon), name="rsyncd", daemon=True)
    thread.start()
    try:
        yield daemon
    finally:
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        thread.join()
        for proc in daemon.connections:
            if proc.poll() is None:
                proc.terminate()
            proc.wait()
