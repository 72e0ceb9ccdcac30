"""Attacks on connections rather than on data (issue 28), each against real server processes: idle
connections past the open-file limit, malformed requests, and slow readers holding every upload slot. Each
ends with an honest client served and the server's log a few lines long.

The servers' timeouts are shortened through the environment (shoal.http.limits), and the open-file limit
of a server's process is lowered with prlimit, so that a few dozen sockets do what a thousand would.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.core.ids import task_id_for_url
from shoal.testing.poll import wait_until, wait_until_async
from shoal.testing.processes import Service, shoal_argv, start_service
from tests.integration.conftest import Origin, run_get, task_summary

SIZE = 16 << 20  # 64 pieces of 256 KiB


@pytest.fixture
def logged(tmp_path: Path) -> Iterator[list[tuple[Service, Path]]]:
    """Services whose stderr goes to a file the test reads; stopped at the end."""
    started: list[tuple[Service, Path]] = []
    yield started
    for service, _ in started:
        service.kill()


def start_logged(
    started: list[tuple[Service, Path]], argv: list[str], log: Path, env: dict[str, str] | None = None
) -> Service:
    """``argv`` with its stderr in ``log`` (start_service's contract otherwise: the ``listening on`` line)."""
    with open(log, "w") as stderr:
        service = start_service(argv, env=env, stderr=stderr)
    started.append((service, log))
    return service


def tracker_argv(tmp_path: Path) -> list[str]:
    db = f"sqlite:///{tmp_path / 'tracker.db'}"
    return shoal_argv("tracker", "--host", "127.0.0.1", "--port", "0", "--db", db)


def health(url: str, timeout: float = 60) -> int:
    with urllib.request.urlopen(f"{url}/v1/health", timeout=timeout) as reply:
        return reply.status


def test_idle_connections_past_the_file_limit_time_out_and_the_log_stays_short(tmp_path, logged) -> None:
    """A tracker allowed 64 open files, 80 idle connections: it accepts what it can, logs the failed accepts
    one line a second, closes the idle ones after its idle timeout and answers an honest request."""
    argv = ["prlimit", "--nofile=64:64", *tracker_argv(tmp_path)]
    tracker = start_logged(logged, argv, tmp_path / "tracker.log", env={"SHOAL_IDLE_TIMEOUT": "1"})
    started = time.monotonic()
    idle = [socket.create_connection(("127.0.0.1", int(tracker.url.rsplit(":", 1)[1]))) for _ in range(80)]
    try:
        assert health(tracker.url) == 200
        for sock in idle[:10]:  # the first ones were accepted, and have been closed by the tracker since
            sock.settimeout(30)
            assert sock.recv(1) == b""
    finally:
        for sock in idle:
            sock.close()
    elapsed = time.monotonic() - started
    log = (tmp_path / "tracker.log").read_text()
    accepts = [line for line in log.splitlines() if "socket.accept() out of system resource" in line]
    assert accepts, f"the tracker never reached its file limit:\n{log}"
    assert len(accepts) <= elapsed + 2, log
    assert "Traceback" not in log


def test_malformed_requests_are_logged_one_line_a_second(tmp_path, logged) -> None:
    tracker = start_logged(logged, tracker_argv(tmp_path), tmp_path / "tracker.log")
    port = int(tracker.url.rsplit(":", 1)[1])
    started = time.monotonic()
    for _ in range(50):
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(b"GET /" + b"a" * (40 << 10) + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(64).split(b" ")[1] == b"400"
    assert health(tracker.url) == 200
    elapsed = time.monotonic() - started
    log = (tmp_path / "tracker.log").read_text()
    lines = [line for line in log.splitlines() if "Error handling request" in line]
    assert 1 <= len(lines) <= elapsed + 2, log
    assert "Traceback" not in log and all(len(line) < 400 for line in lines)


def data_request(task_id: str) -> bytes:
    return (f"GET /v1/tasks/{task_id}/data?gen=1 HTTP/1.1\r\nHost: x\r\nRange: bytes=0-{SIZE - 1}\r\n\r\n").encode()


def serves_whole_file(seed_url: str, task_id: str) -> bool:
    request = urllib.request.Request(
        f"{seed_url}/v1/tasks/{task_id}/data?gen=1", headers={"Range": f"bytes=0-{SIZE - 1}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status == 206 and len(reply.read()) == SIZE
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return False  # not every piece is served yet
        raise


def response_heads(socks: list[socket.socket]) -> list[bytes] | None:
    """Each socket's response status line, peeked (the socket's buffer stays full, so its sender stays
    stalled); None until every one has arrived."""
    heads = []
    for sock in socks:
        try:
            head = sock.recv(16, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return None
        if 0 < len(head) < len(b"HTTP/1.1 206"):
            return None  # the rest of the status line is on its way
        heads.append(head)
    return heads


def uploads(seed_url: str) -> int:
    with urllib.request.urlopen(f"{seed_url}/v1/health", timeout=10) as reply:
        return int(json.load(reply)["uploads"])


async def test_slow_readers_lose_their_upload_slots_and_a_new_download_completes(
    tmp_path, tracker, origin, make_file, procs
) -> None:
    """16 sockets ask a seed for the whole file and never read: each holds one of its 16 upload slots until a
    piece misses its deadline. A new download then takes the file from the seed, not from the origin."""
    src: Origin = origin()
    data = make_file(src.root / "s.bin", SIZE)
    url = src.url("s.bin")
    t = tracker()
    seed = subprocess.Popen(  # noqa: ASYNC220 (its start is all that blocks)
        shoal_argv("get", url, "-o", str(tmp_path / "seed.bin"), "--tracker", t.url, "--upload-time", "300"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A piece's write deadline that outlasts making the 16 connections on a busy machine, so that all of
        # them hold their slots at once when counted; the later download waits it out once.
        env={**os.environ, "SHOAL_WRITE_TIMEOUT": "5"},
    )
    procs.append(seed)
    task_id = task_id_for_url(url)

    def seed_peer() -> list[dict[str, object]]:
        try:
            peers = task_summary(t, task_id).get("peers", [])
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return []  # the seed has not announced yet
            raise
        assert isinstance(peers, list)
        return [p for p in peers if p["pieces"] == SIZE // (256 << 10)]

    [peer] = await wait_until_async(seed_peer, "the seed to hold every piece")
    seed_url = f"http://127.0.0.1:{peer['port']}"
    # The tracker counts an origin piece held from its holder's hash report, and the holder serves it once
    # the tracker's answer comes back: a request in between is a 404, which a downloader takes as "go
    # elsewhere" but which would leave a slow reader here without the slot it came for.
    await wait_until_async(lambda: serves_whole_file(seed_url, task_id), "the seed to serve every piece")
    slow = []
    for _ in range(16):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", int(peer["port"])))
        sock.sendall(data_request(task_id))
        slow.append(sock)
    try:
        heads = wait_until(lambda: response_heads(slow), "a response head on each slow reader's connection")
        assert all(head.startswith(b"HTTP/1.1 206") for head in heads), heads
        wait_until(lambda: uploads(seed_url) == 16, "the slow readers to hold every upload slot")
        later = run_get(url, "-o", str(tmp_path / "later.bin"), "--tracker", t.url, "--upload-time", "0")
        assert later.returncode == 0, later.stderr
        assert (tmp_path / "later.bin").read_bytes() == data
        assert src.bytes_sent() <= SIZE * 1.02 + 8192  # the later download's bytes came from the seed
    finally:
        for sock in slow:
            sock.close()
