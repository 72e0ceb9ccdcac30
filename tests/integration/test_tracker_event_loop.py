"""``shoal tracker --event-loop`` (shoal.http.event_loop; issue 27): the tracker runs on the loop it says it
runs on, and answers announces on either; uvloop asked for where it is missing is refused before anything
starts."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

import pytest

from shoal.core.ids import task_id_for_url
from shoal.http.event_loop import uvloop_installed
from shoal.testing.hostile import identity
from shoal.testing.processes import start_tracker

URL = "http://origin.invalid/loop.bin"


def announce(tracker: str) -> dict[str, object]:
    me = identity("loop")
    body = {
        "peer_id": me.peer_id,
        "secret": me.secret,
        "url": URL,
        "port": 7000,
        "host": "127.0.0.1",
        "event": "started",
        "origin": {"length": 1 << 20, "etag": '"v1"', "last_modified": ""},
    }
    request = urllib.request.Request(
        f"{tracker}/v1/tasks/{task_id_for_url(URL)}/announce",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        assert resp.status == 200
        reply: dict[str, object] = json.load(resp)
        return reply


def needs_uvloop() -> None:
    if not uvloop_installed():
        if os.environ.get("CI") == "true":
            pytest.fail("uvloop is not installed (scripts/test installs shoal[tracker])")
        pytest.skip("uvloop is not installed (pip install 'shoal[tracker]')")


@pytest.mark.parametrize("asked", ["asyncio", "uvloop", "auto"])
def test_the_tracker_runs_on_the_loop_asked_for_and_answers_announces(tmp_path: Path, asked: str) -> None:
    if asked != "asyncio":
        needs_uvloop()
    tracker = start_tracker(f"sqlite:///{tmp_path / 'tracker.db'}", extra=("--event-loop", asked))
    try:
        ran = "asyncio" if asked == "asyncio" else "uvloop"
        assert f"event loop {ran})" in tracker.line
        reply = announce(tracker.url)
        assert reply["generation"] == 1 and reply["manifest"] is not None
    finally:
        tracker.stop()
    assert tracker.proc.returncode == 0
