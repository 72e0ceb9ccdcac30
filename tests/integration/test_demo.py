"""`shoal demo` shows its peers' progress while they run, and ends beside what the fetch costs without Shoal;
it warns about nothing of its own making, and opens no port beyond loopback."""

from __future__ import annotations

import io
import re
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from shoal.cli.demo import run_demo
from shoal.testing.processes import shoal_argv

PROGRESS = re.compile(r"^ +\d+\.\ds  \S+ \S+ of 8\.0 MiB \(\d+%\)  origin \S+ \S+ · peers \S+ \S+  \d of 2 peers done$")


def test_demo_shows_progress_while_it_runs_then_shoal_beside_each_peer_from_the_origin() -> None:
    # 4 MiB at 2 MiB/s: the origin alone needs about two seconds, so a line comes (after one) before the end.
    result = subprocess.run(
        shoal_argv("demo", "--peers", "2", "--size", "4M", "--origin-rate", "2M"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    # Its tracker and peers hold a fleet token and an operator token of the demo's own: none of them warns
    # that anyone may use it (the warnings of a service that is open are tests/integration/test_fleet_auth's).
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    first_done = next(i for i, line in enumerate(lines) if re.match(r"peer\d has the file after ", line))
    assert any(PROGRESS.match(line) for line in lines[:first_done]), result.stdout
    assert sum(bool(re.match(r"peer[01] has the file after \d+\.\ds \(origin ", line)) for line in lines) == 2
    without = next(line for line in lines if "without Shoal " in line)
    assert "8.0 MiB = 2 x the file" in without and "4.0s" in without  # 2 x 4 MiB at 2 MiB/s
    with_shoal = next(line for line in lines if "with Shoal " in line)
    assert re.search(r"\d+\.\d+ MiB = 1\.\d\d x the file", with_shoal), with_shoal


async def test_the_demo_listens_on_loopback_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its tracker, its origin and each of its peers listen on 127.0.0.1: the demo opens no port to the
    network (every TCP socket bound in the process while it runs is counted)."""
    bound: list[Any] = []
    bind = socket.socket.bind

    def recording(sock: socket.socket, address: Any) -> None:
        if sock.type == socket.SOCK_STREAM:
            bound.append(address[0])
        bind(sock, address)

    monkeypatch.setattr(socket.socket, "bind", recording)
    await run_demo(tmp_path, 2, 1 << 20, 4 << 20, Console(file=io.StringIO()))
    assert bound == ["127.0.0.1"] * 4  # the tracker, the origin, two peers
