"""The tracker's limits on new peers (issue 28, "Bounded state"), against a real tracker process: a flood of
made-up peer ids fills a task only up to ``--max-peers-per-task`` and a source only up to
``--max-new-peers-per-source``, with the refusals peers understand (503 or 429 with Retry-After), while the
peers already in the swarm keep being answered, and a real `shoal get` refused for a while waits and
finishes."""

from __future__ import annotations

import http.client
import json
import secrets
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import msgspec

from shoal.core.ids import PeerIdentity, task_id_for_url
from shoal.core.messages import AnnounceRequest
from shoal.testing.processes import Service
from tests.integration.conftest import Origin, run_get, task_summary


class Reply:
    def __init__(self, status: int, body: dict[str, object], retry_after: str | None) -> None:
        self.status, self.body, self.retry_after = status, body, retry_after


def announce(tracker: Service, url: str, peer: PeerIdentity, *, source: str = "127.0.0.1", **fields: object) -> Reply:
    """One JSON announce of ``url``'s task, sent from the address ``source``."""
    parts = urlsplit(tracker.url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30, source_address=(source, 0))
    body = AnnounceRequest(peer_id=peer.peer_id, secret=peer.secret, url=url, port=7000, **fields)  # type: ignore[arg-type]
    try:
        conn.request(
            "POST",
            f"/v1/tasks/{task_id_for_url(url)}/announce",
            body=msgspec.json.encode(body),
            headers={"Content-Type": "application/json"},
        )
        response = conn.getresponse()
        return Reply(response.status, json.loads(response.read()), response.getheader("Retry-After"))
    finally:
        conn.close()


def fake() -> PeerIdentity:
    return PeerIdentity.from_secret(secrets.token_hex(16), "fake")


def test_a_flood_of_peer_ids_is_capped_per_task_and_per_source(tracker: Callable[..., Service]) -> None:
    t = tracker(peer_ttl=60.0, extra=["--max-peers-per-task", "4", "--max-new-peers-per-source", "12"])
    url = "http://origin.example/flooded.bin"
    honest = [PeerIdentity.from_secret(secrets.token_hex(16), "honest") for _ in range(2)]
    for peer in honest:
        assert announce(t, url, peer, event="started").status == 200
    # The flood: two fakes fill the task, the rest are refused as a busy tracker's newcomers.
    replies = [announce(t, url, fake(), event="started") for _ in range(6)]
    assert [r.status for r in replies] == [200, 200, 503, 503, 503, 503]
    refused = replies[-1]
    assert refused.retry_after is not None and int(refused.retry_after) >= 1
    assert "the task has 4 peers" in str(refused.body["error"]) and "--max-peers-per-task" in str(refused.body["error"])
    # The swarm holds the four, and its peers are answered as before.
    assert len(task_summary(t, task_id_for_url(url))["peers"]) == 4  # type: ignore[arg-type]
    assert announce(t, url, honest[0]).status == 200
    # A peer that leaves makes room (a stopped announce is never refused).
    assert announce(t, url, honest[1], event="stopped").status == 200
    assert announce(t, url, fake(), event="started").status == 200
    # Per source: 4 + 1 new peers taken so far from 127.0.0.1, the refused ones cost nothing; 7 more fit
    # on other tasks, then a 429 says when one more will.
    others = [announce(t, f"http://origin.example/other{i}.bin", fake(), event="started") for i in range(8)]
    assert [r.status for r in others] == [200] * 7 + [429]
    limited = others[-1]
    assert limited.retry_after is not None and 1 <= int(limited.retry_after) <= 5  # one token in 60/12 s
    assert "too many new peers from 127.0.0.1" in str(limited.body["error"])
    # Another source has a bucket of its own; the swarm's peers are still answered from the limited one.
    assert announce(t, "http://origin.example/other9.bin", fake(), source="127.0.0.2", event="started").status == 200
    assert announce(t, url, honest[0]).status == 200


def test_a_get_refused_by_the_source_limit_waits_and_finishes(
    tracker: Callable[..., Service],
    origin: Callable[..., Origin],
    make_file: Callable[[Path, int], bytes],
    tmp_path: Path,
) -> None:
    t = tracker(extra=["--max-new-peers-per-source", "30"])  # a token every 2 s
    o = origin()
    data = make_file(o.root / "file.bin", 1 << 20)
    taken = [announce(t, f"http://origin.example/f{i}.bin", fake(), event="started").status for i in range(31)]
    assert taken == [200] * 30 + [429]
    done = run_get(o.url("file.bin"), "-o", str(tmp_path / "f.bin"), "--tracker", t.url, "--upload-time", "0", "-v")
    assert done.returncode == 0, done.stderr
    assert "the tracker asks to wait: too many new peers from 127.0.0.1" in done.stderr
    assert (tmp_path / "f.bin").read_bytes() == data
