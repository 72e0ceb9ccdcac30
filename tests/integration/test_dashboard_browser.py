"""The dashboards in a real browser: Debian's chromium, driven by Playwright, reading pages that real
processes serve while a real swarm downloads, a real pool push runs and real mirror jobs sync.

Each test opens its page before the work starts and follows it through the page alone: the figures must
move while the work runs (the server pushes them: no reload) and end at the totals the services count.
Every wait polls the page's DOM against a generous deadline; nothing waits a fixed time. Without a
browser that can be launched the tests skip with the reason, and fail under CI (``CI=true``), which
installs chromium (scripts/test).
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal.core.ids import task_id_for_url
from shoal.testing.poll import wait_until
from shoal.testing.processes import Service, shoal_argv, start_daemon, start_mirror_worker, start_service
from tests.integration.conftest import Origin

CHROMIUM = "/usr/bin/chromium"
MiB = 1 << 20
DEADLINE = 120.0


def unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"the dashboards' browser tests need chromium under CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        unavailable("Playwright for Python is not installed (pip install '.[test]')")
    playwright = sync_playwright().start()
    try:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
    except Error as exc:
        playwright.stop()
        unavailable(f"chromium cannot be launched from {CHROMIUM} (apt-get install chromium): {exc.message}")
    yield chromium
    chromium.close()
    playwright.stop()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    yield context.new_page()
    context.close()


def read_json(url: str, token: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as reply:
        return json.load(reply)


def post_json(url: str, body: Any, token: str | None = None) -> Any:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers=headers)
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.load(reply)


def live(page: Any, url: str) -> None:
    """Open a dashboard and wait until its stream is connected."""
    page.goto(url)
    page.wait_for_selector("#conn.live", timeout=DEADLINE * 1000)


TASK_STATE = """(task) => {
  const card = document.querySelector(`[data-task="${task}"]`);
  if (!card) return null;
  return {
    peers: +card.dataset.peers, seeds: +card.dataset.seeds,
    origin: +card.dataset.fromOrigin, fromPeers: +card.dataset.fromPeers,
    progress: [...card.querySelectorAll('.peer')].map((p) => +p.dataset.progress),
    shown: card.querySelector('.from-origin').textContent,
  };
}"""


def test_the_tracker_page_follows_a_swarm_to_its_totals(
    page: Any,
    tracker: Callable[..., Service],
    origin: Callable[..., Origin],
    make_file: Callable[[Path, int], bytes],
    spawn_get: Callable[..., Any],
    tmp_path: Path,
) -> None:
    size = 12 * MiB
    src = origin("--rate", "2M")
    make_file(src.root / "fleet.img", size)
    t = tracker()
    live(page, t.url)
    url = src.url("fleet.img")
    task = task_id_for_url(url)
    for i in range(3):
        where = ["--site", "s1", "--rack", f"r{i % 2}", "--upload-time", "300", "--no-daemon"]
        spawn_get(url, "-o", str(tmp_path / f"p{i}.img"), "--tracker", t.url, *where)

    # While it runs the page's figures move by themselves: a peer part-way, the origin's bytes growing.
    origins: set[int] = set()

    def moving() -> bool:
        state = page.evaluate(TASK_STATE, task)
        if state is None:
            return False
        origins.add(state["origin"])
        part_way = any(0 < p < 1 for p in state["progress"])
        return part_way and len({o for o in origins if 0 < o < size}) >= 2

    wait_until(moving, "the page to show the swarm part-way, its origin bytes growing", timeout=DEADLINE)

    # At the end: every peer at 100%, and the origin's bytes the tracker counted, as the page shows them.
    def finished() -> dict[str, Any] | None:
        state = page.evaluate(TASK_STATE, task)
        counted = read_json(f"{t.url}/v1/tasks/{task}")["received"]
        done = state and state["seeds"] == 3 and state["progress"] == [1, 1, 1]
        settled = done and state["origin"] == counted.get("origin") and state["origin"] + state["fromPeers"] >= 3 * size
        return state if settled else None

    state = wait_until(finished, "every peer at 100% and the origin's bytes settled", timeout=DEADLINE)
    assert state["peers"] == 3
    assert page.locator(f'[data-task="{task}"] .pct').all_inner_texts() == ["100%"] * 3
    # Each byte left the origin about once (origin leases), and the page's figure is what the origin sent,
    # less the one-byte probe each peer makes.
    sent = src.bytes_sent()
    assert size <= state["origin"] <= sent <= state["origin"] + 3
    assert state["shown"] == "12.0 MiB"


# Draws the tracker page's chart (Shoal.chart, live.js) on a canvas of its own, which no snapshot redraws,
# and counts the pixels of each series' colour as the page's stylesheet sets it: a line's core pixels are
# its colour exactly, and a pixel that another line or a fill covers is not.
CHART_PIXELS = """(samples) => {
  const canvas = document.createElement('canvas');
  canvas.style.width = '600px'; canvas.style.height = '200px';
  document.body.append(canvas);
  Shoal.chart(canvas, samples, samples[samples.length - 1][0], 60);
  const g = canvas.getContext('2d');
  const rgb = (name) => {
    const probe = document.createElement('canvas').getContext('2d');
    probe.fillStyle = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
    const hex = probe.fillStyle;
    return [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
  };
  const colours = { origin: rgb('--origin'), peers: rgb('--peers') };
  const counts = { origin: 0, peers: 0 };
  const data = g.getImageData(0, 0, canvas.width, canvas.height).data;
  for (let i = 0; i < data.length; i += 4) {
    for (const [name, [r, gr, b]] of Object.entries(colours)) {
      const near = Math.abs(data[i] - r) <= 6 && Math.abs(data[i + 1] - gr) <= 6 && Math.abs(data[i + 2] - b) <= 6;
      if (near && data[i + 3] >= 250) counts[name]++;
    }
  }
  canvas.remove();
  return counts;
}"""


def test_the_tracker_page_chart_shows_both_lines_whatever_their_rates(
    page: Any, tracker: Callable[..., Service]
) -> None:
    t = tracker()
    live(page, t.url)
    rate = 5 * MiB
    # (origin, peers) a second: equal (the lines of overlaid series would lie on each other), the peers
    # giving nothing, the origin giving nothing.
    for origin_rate, peers_rate in ((rate, rate), (rate, 0), (0, rate)):
        samples = [[1000 + s, origin_rate, peers_rate] for s in range(61)]
        counts = page.evaluate(CHART_PIXELS, samples)
        # Each line that has a rate crosses most of the plot's 514 pixels of width; the origin's shows
        # even at zero, along the axis, and the peers' at zero lies under it.
        assert counts["origin"] >= 400, (origin_rate, peers_rate, counts)
        if peers_rate:
            assert counts["peers"] >= 400, (origin_rate, peers_rate, counts)


MEMBER_STATE = """() => [...document.querySelectorAll('tr.member')].map((m) => ({
  status: m.dataset.status, done: +m.dataset.done, total: +m.dataset.total }))"""


def test_the_tracker_page_follows_a_pool_push_to_every_member(
    page: Any,
    tracker: Callable[..., Service],
    origin: Callable[..., Origin],
    make_file: Callable[[Path, int], bytes],
    services: list[Service],
    tmp_path: Path,
) -> None:
    size = 10 * MiB
    src = origin("--rate", "2M")
    make_file(src.root / "model.bin", size)
    t = tracker()
    token = post_json(f"{t.url}/v1/pools", {"name": "edge", "allow": ["127.0.0.0/8"]})["token"]
    for i in range(2):
        extra = ["--pool", "edge", "--name", f"edge-{i}", "--site", "s1", "--rack", f"r{i}"]
        services.append(start_daemon(tmp_path / f"d{i}", tmp_path / f"d{i}.sock", tracker=t.url, extra=extra))
    live(page, t.url)
    page.wait_for_function(
        "() => document.querySelector('[data-pool=\"edge\"] .badge')?.textContent.startsWith('2 of 2')",
        timeout=DEADLINE * 1000,
    )
    job = post_json(f"{t.url}/v1/pools/edge/jobs", {"url": src.url("model.bin")}, token)["job"]

    def part_way() -> bool:
        members = page.evaluate(MEMBER_STATE)
        return any(m["status"] == "running" and 0 < m["done"] < m["total"] for m in members)

    wait_until(part_way, "a member shown part-way through the push", timeout=DEADLINE, interval=0.1)

    def complete() -> list[dict[str, Any]] | None:
        push = page.locator(f'[data-job="{job}"]')
        members = page.evaluate(MEMBER_STATE)
        done = push.count() and push.get_attribute("data-status") == "complete"
        return members if done and [m["status"] for m in members] == ["done", "done"] else None

    members = wait_until(complete, "the push complete on every member", timeout=DEADLINE)
    assert [(m["done"], m["total"]) for m in members] == [(size, size)] * 2
    status = read_json(f"{t.url}/v1/pools/edge/jobs/{job}", token)
    assert status["status"] == "complete" and {m["done"] for m in status["members"]} == {size}
    assert page.locator(f'[data-job="{job}"] .pill').first.inner_text() == "complete"


MIRROR_TOKEN = "browser-test-token"
MIRROR_JOBS = """
[[jobs]]
name = "tools"
provider = "command"
upstream = "https://mirror-user:pw@downloads.example.org/tools/?key=SECRETKEY"
command = "head -c 3145728 /dev/zero > tools.tar"
interval = "1h"

[[jobs]]
name = "broken"
provider = "command"
upstream = "rsync://broken.example.org/"
command = "echo 'upstream refused the connection' >&2; exit 7"
interval = "1h"
retries = 1
"""


def test_the_mirror_page_follows_jobs_without_the_token_when_made_public(page: Any, tmp_path: Path) -> None:
    config = tmp_path / "mirrors.toml"
    config.write_text(f'[manager]\ntoken = "{MIRROR_TOKEN}"\nworker_timeout = "5s"\n{MIRROR_JOBS}')
    argv = ["mirror", "manager", "--config", str(config), "--host", "127.0.0.1", "--port", "0", "--public-dashboard"]
    manager = start_service(shoal_argv(*argv))
    worker = None
    try:
        live(page, manager.url)
        page.wait_for_selector('tr.job[data-job="tools"][data-status="none"]', timeout=DEADLINE * 1000)
        worker_config = tmp_path / "worker.toml"
        worker_config.write_text(
            f'[worker]\nmanager = "{manager.url}"\ntoken = "{MIRROR_TOKEN}"\ndirectory = "{tmp_path / "mirror"}"\n'
            'seed_host = "127.0.0.1"\nseed_port = 0\n'
        )
        worker = start_mirror_worker(worker_config, "w1")
        # The page learns of the runs by itself, and shows their outcome.
        page.wait_for_selector('tr.job[data-job="tools"][data-status="success"]', timeout=DEADLINE * 1000)
        page.wait_for_selector('tr.job[data-job="broken"][data-status="failed"]', timeout=DEADLINE * 1000)
        tools = page.locator('tr.job[data-job="tools"]')
        assert tools.get_attribute("data-size") == str(3 * MiB)
        assert "3.00 MiB" in tools.inner_text() and "https://downloads.example.org/tools/" in tools.inner_text()
        broken = page.locator('tr.job[data-job="broken"]')
        broken.locator("summary").click()
        assert "upstream refused the connection" in broken.inner_text()
        page.wait_for_selector('tr[data-worker="w1"] .pill.ok', timeout=DEADLINE * 1000)
        assert "SECRETKEY" not in page.content() and "mirror-user" not in page.content()
        # Each job that ran links its latest run log, which the manager reads on the worker (no token: public).
        for job, said in (("tools", "head -c 3145728 /dev/zero"), ("broken", "upstream refused the connection")):
            link = page.locator(f'tr.job[data-job="{job}"] a.log')
            assert link.inner_text() == "log" and link.get_attribute("href") == f"/logs/{job}/latest"
            with page.expect_popup() as opened:
                link.click()
            log_page = opened.value
            log_page.wait_for_load_state()
            shown = log_page.locator("body").inner_text()
            assert said in shown and ("== success" if job == "tools" else "== failed") in shown, shown
            assert "SECRETKEY" not in shown
            log_page.close()
        assert page.locator("button, form, input").count() == 0  # read-only: no control on the page
    finally:
        if worker is not None:
            worker.stop()
        manager.stop()
