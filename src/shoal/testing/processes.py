"""Real processes for integration tests and benchmarks: a tracker, an origin, `shoal get`, aria2c.

Each service is started with port 0 and prints the address it listens on; :func:`start_service` waits for
that line so a test never guesses a port or sleeps. (There is no "free port" helper: a port probed free and
handed to another process can be taken in between; see :mod:`shoal.testing.sockets`.)
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

_LISTENING = re.compile(r"listening on (https?://\S+)")


def compile_bytecode() -> None:
    """Byte-compile the shoal package where it is imported from, as pip does on a regular install.

    An editable install never gets its bytecode written when ``PYTHONDONTWRITEBYTECODE`` is set (it is on
    this project's machines): every process then compiles every module it imports again, a large share of
    a small ``shoal get``'s CPU time (figures in benchmarks/RESULTS.md), and peers starting at once on few
    cores wait for each other's compiling. Benchmarks and the test session call this first, so the processes they
    start behave like an installed tool."""
    package = Path(__file__).resolve().parent.parent
    # Best effort: a package it cannot write to (installed read-only) runs from its installed bytecode.
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0", str(package)], check=False)


@dataclass
class Service:
    proc: subprocess.Popen[str]
    url: str
    argv: list[str]
    line: str = ""
    """The ``listening on URL ...`` line it printed."""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


def start_service(
    argv: Sequence[str],
    *,
    timeout: float = 20.0,
    env: dict[str, str] | None = None,
    log: Path | None = None,
    stderr: IO[str] | None = None,
) -> Service:
    """Start ``argv`` and wait for its ``listening on URL`` line on stdout; its stderr goes to the file
    ``log`` (appended; a test reads what it logged) or to the open ``stderr`` when given, else to the test's."""
    opened = open(log, "a") if log is not None else None  # the child keeps its own copy of the descriptor
    try:
        proc = subprocess.Popen(
            list(argv), stdout=subprocess.PIPE, stderr=opened or stderr, text=True, env={**os.environ, **(env or {})}
        )
    finally:
        if opened is not None:
            opened.close()
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        match = _LISTENING.search(line)
        if match:
            url = match.group(1).replace("0.0.0.0", "127.0.0.1")
            return Service(proc, url, list(argv), line.rstrip("\n"))
    proc.kill()
    proc.wait()
    raise RuntimeError(f"{' '.join(argv)} did not start (exit {proc.returncode})")


def shoal_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "shoal", *args]


def start_tracker(
    db: str,
    *,
    port: int = 0,
    interval: float = 0.5,
    peer_ttl: float = 2.0,
    idle_interval: float | None = None,
    extra: Sequence[str] = (),
    log: Path | None = None,
) -> Service:
    """A ``shoal tracker`` on 127.0.0.1. ``idle_interval`` None: every peer is told ``interval``, idle seeds
    too (tests that wait for a peer to expire count on ``peer_ttl``)."""
    return start_service(
        shoal_argv(
            "tracker",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--db",
            db,
            "--interval",
            str(interval),
            "--peer-ttl",
            str(peer_ttl),
            "--idle-interval",
            str(interval if idle_interval is None else idle_interval),
            *extra,
        ),
        log=log,
    )


def start_origin(root: Path, *extra: str) -> Service:
    return start_service([sys.executable, "-m", "shoal.testing.origin", str(root), *extra])


def write_random(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


def start_seeder(*dirs: Path, state_dir: Path, extra: Sequence[str] = (), log: Path | None = None) -> Service:
    """``shoal seed`` on 127.0.0.1 with free ports; it prints its line once the start-up scan is queued. Its
    stderr goes to ``log`` when given (as ``start_service``'s)."""
    return start_service(
        shoal_argv(
            "seed",
            *map(str, dirs),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--bt-port",
            "0",
            "--state-dir",
            str(state_dir),
            *extra,
        ),
        log=log,
    )


def start_mirror_manager(
    config: Path,
    *,
    port: int = 0,
    env: dict[str, str] | None = None,
    extra: Sequence[str] = (),
    log: Path | None = None,
) -> Service:
    """``shoal mirror manager`` on 127.0.0.1 (a free port unless ``port``, whatever the config says), with
    ``extra`` options; ``log``: where its stderr goes (else the test's)."""
    argv = ["mirror", "manager", "--config", str(config), "--host", "127.0.0.1", "--port", str(port), *extra]
    return start_service(shoal_argv(*argv), env=env, log=log)


def start_mirror_worker(
    config: Path, name: str | None, *, env: dict[str, str] | None = None, log: Path | None = None
) -> Service:
    """``shoal mirror worker``; ``url`` is its seeder's (the config's ``[worker] seed_host/seed_port``).
    ``name`` None: the config's ``[worker] name``; ``log``: where its stderr goes (else the test's)."""
    named = ["--name", name] if name is not None else []
    return start_service(shoal_argv("mirror", "worker", "--config", str(config), *named, "-v"), env=env, log=log)


def start_daemon(
    cache_dir: Path,
    socket: Path,
    *,
    tracker: str | None = None,
    capacity: str = "1G",
    extra: Sequence[str] = (),
    log: Path | None = None,
    env: dict[str, str] | None = None,
) -> Service:
    """``shoal daemon`` with its piece server on 127.0.0.1 (a free port); ``url`` is the piece server's.
    ``env``: variables added to this environment."""
    argv = ["daemon", "--cache-dir", str(cache_dir), "--socket", str(socket), "--capacity", capacity]
    argv += ["--listen", "127.0.0.1:0", *(["--tracker", tracker] if tracker else []), *extra]
    return start_service(shoal_argv(*argv), log=log, env=env)


def run_aria2c(source: str, out: Path, *extra: str, log_level: str = "warn") -> subprocess.CompletedProcess[str]:
    """aria2c fetching ``source`` (a .torrent file or URL) into ``out``: BitTorrent only from the sources the
    torrent names (no DHT, local discovery or peer exchange), and no seeding once done."""
    return subprocess.run(
        [
            "aria2c",
            "--enable-dht=false",
            "--enable-dht6=false",
            "--bt-enable-lpd=false",
            "--enable-peer-exchange=false",
            "--seed-time=0",
            # No port handed in: aria2c binds the first free one of its own range (6881-6999, below the
            # kernel's ephemeral ports), so two runs at once never race for one.
            "--listen-port=6881-6999",
            f"--console-log-level={log_level}",
            "--summary-interval=0",
            f"--dir={out}",
            *extra,
            source,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
