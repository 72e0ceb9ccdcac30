"""Fixtures for integration tests: real tracker, origin, daemon and `shoal get` processes on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shoal.core.ids import task_id_for_url
from shoal.core.manifest import Manifest, OriginIdentity
from shoal.storage.partfile import PartFile, piece_hash
from shoal.testing.processes import Service, shoal_argv, start_daemon, start_origin, start_tracker, write_random


@dataclass
class Origin:
    service: Service
    root: Path

    def url(self, name: str) -> str:
        return f"{self.service.url}/{name}"

    def bytes_sent(self) -> int:
        return int(self.stats()["bytes_sent"])

    def requests(self) -> int:
        return int(self.stats()["requests"])

    def queries(self) -> list[str]:
        """The distinct query strings of the file requests the origin served."""
        return list(self.stats()["queries"])

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.service.url}/_stats") as r:
            return json.load(r)

    def set_rate(self, rate: str) -> None:
        """Change the cap of an origin started with ``--rate``."""
        with urllib.request.urlopen(urllib.request.Request(f"{self.service.url}/_rate?to={rate}", method="POST")):
            pass


@pytest.fixture
def services() -> Iterator[list[Service]]:
    started: list[Service] = []
    yield started
    for service in started:
        service.kill()


@pytest.fixture
def tracker(tmp_path: Path, services: list[Service]) -> Callable[..., Service]:
    def make(db: str | None = None, **options: Any) -> Service:
        service = start_tracker(db or f"sqlite:///{tmp_path / 'tracker.db'}", **options)
        services.append(service)
        return service

    return make


@pytest.fixture
def origin(tmp_path: Path, services: list[Service]) -> Callable[..., Origin]:
    def make(*extra: str) -> Origin:
        root = tmp_path / "origin"
        root.mkdir(exist_ok=True)
        service = start_origin(root, *extra)
        services.append(service)
        return Origin(service, root)

    return make


@pytest.fixture
def make_file() -> Callable[[Path, int], bytes]:
    return write_random


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    running: list[subprocess.Popen[str]] = []
    yield running
    for proc in running:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


@pytest.fixture
def spawn_get(procs: list[subprocess.Popen[str]]) -> Callable[..., subprocess.Popen[str]]:
    """Start `shoal get` as a process; stderr is captured for assertions."""

    def spawn(*args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(shoal_argv("get", *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(proc)
        return proc

    return spawn


def run_get(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(shoal_argv("get", *args), capture_output=True, text=True, timeout=timeout)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def task_summary(tracker: Service, task_id: str) -> dict[str, object]:
    with urllib.request.urlopen(f"{tracker.url}/v1/tasks/{task_id}") as r:
        return json.load(r)  # type: ignore[no-any-return]


def cluster_settled(view: dict[str, Any], n: int) -> bool:
    """Whether a tracker's ``GET /v1/cluster`` reply shows ``n`` live members and the tracker deciding: a member
    the others count live decides only after its join delay, and answers its tasks 503 until then."""
    return bool(view["deciding"]) and sum(m["live"] for m in view["members"]) == n


def no_partial_files(directory: Path) -> bool:
    return not any(p.name.endswith((".shoal-part", ".shoal-state")) for p in directory.iterdir())


def rewritten_after_an_interrupted_run(url: str, origin_file: Path, dest: Path) -> bytes:
    """Leave what an interrupted run of ``url`` into ``dest`` leaves, the part file with every piece of the
    origin's bytes written and its sidecar; then rewrite the origin's file in place with new bytes and its old
    mtime, so that its ETag and Last-Modified stay the same. Returns the new bytes. (Blocking: from an async
    test whose loop serves the origin, run it in a thread.)"""
    old = origin_file.read_bytes()
    with urllib.request.urlopen(urllib.request.Request(url, method="HEAD")) as head:
        identity = OriginIdentity(len(old), head.headers["ETag"])  # a strong ETag: Last-Modified is not kept
    part = PartFile(dest, task_id_for_url(url), Manifest.for_identity(identity))
    part.open()
    hashes = {}
    for index in range(part.manifest.piece_count):
        start, end = part.manifest.span(index, 1)
        part.write(index, [old[start:end]])
        hashes[index] = piece_hash(old[start:end])
    part.save_state(hashes)
    part.close()
    mtime = origin_file.stat().st_mtime_ns
    new = os.urandom(len(old))
    origin_file.write_bytes(new)
    os.utime(origin_file, ns=(mtime, mtime))
    return new


class Daemon:
    def __init__(self, service: Service, cache_dir: Path, socket_path: Path) -> None:
        self.service = service
        self.cache_dir = cache_dir
        self.socket = socket_path

    def get(self, url: str, dest: Path, *extra: str) -> subprocess.CompletedProcess[str]:
        return run_get(url, "-o", str(dest), "--socket", str(self.socket), *extra)

    def objects(self) -> list[Path]:
        return sorted((self.cache_dir / "objects").glob("*/*"))

    def index(self, query: str) -> list[tuple[object, ...]]:
        with sqlite3.connect(self.cache_dir / "index.sqlite") as db:
            return db.execute(query).fetchall()


@pytest.fixture
def daemon(tmp_path: Path, services: list[Service]) -> Callable[..., Daemon]:
    def make(
        tracker: Service | None = None, *, name: str = "node", capacity: str = "1G", cache_dir: Path | None = None
    ) -> Daemon:
        cache = cache_dir or tmp_path / name / "cache"
        sock = tmp_path / name / "daemon.sock"
        service = start_daemon(cache, sock, tracker=tracker.url if tracker else None, capacity=capacity)
        services.append(service)
        return Daemon(service, cache, sock)

    return make


def cache_cli(cache_dir: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        shoal_argv("cache", "--cache-dir", str(cache_dir), *args),
        capture_output=True,
        text=True,
        input=stdin,
        timeout=60,
    )
