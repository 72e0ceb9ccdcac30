#!/usr/bin/env python3
"""Screenshots of the dashboards for the README, taken from a small live fleet on this machine.

Starts a tracker, a rate-capped origin, six `shoal get` peers on two sites, a pool of three daemons with a
push to it, and a mirror manager with a worker and four jobs; opens each page in Debian's chromium
(Playwright for Python, never a downloaded browser) while the numbers move, and writes
docs/img/dashboard-tracker.png, dashboard-tracker-dark.png and dashboard-mirror.png.

    PYTHONPATH=src python3 docs/screenshots.py [--out docs/img]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, sync_playwright

from shoal.testing.poll import wait_until
from shoal.testing.processes import (
    Service,
    shoal_argv,
    start_daemon,
    start_mirror_manager,
    start_mirror_worker,
    start_origin,
    start_tracker,
    write_random,
)

MiB = 1 << 20
CHROMIUM = "/usr/bin/chromium"
VIEWPORT = {"width": 1440, "height": 1100}
MIRROR_TOKEN = "screenshot-token"
MIRRORS = """
[[jobs]]
name = "debian"
provider = "command"
upstream = "rsync://ftp.debian.org/debian/"
command = "head -c 1048576 /dev/zero > Release; exec sleep 600"
interval = "6h"

[[jobs]]
name = "tools"
provider = "command"
upstream = "https://downloads.example.org/tools/"
command = "head -c 44040192 /dev/urandom > tools-2.4.1.tar.gz"
interval = "1h"

[[jobs]]
name = "pypi-wheels"
provider = "command"
upstream = "https://pypi.example.org/simple/"
command = "echo 'rsync: connection refused (111)' >&2; exit 10"
interval = "30m"
retries = 1

[[jobs]]
name = "models"
provider = "command"
upstream = "https://models.example.org/releases/"
command = "head -c 7340032 /dev/urandom > weights.bin"
interval = "12h"
"""


def post(url: str, body: Any, token: str | None = None) -> Any:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers=headers)
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.load(reply)


def state(page: Page, script: str) -> Any:
    return page.evaluate(script)


@contextlib.contextmanager
def fleet(root: Path) -> Iterator[tuple[Service, list[Service]]]:
    """A tracker with a live swarm and a running pool push; yields the tracker and everything started."""
    started: list[Service] = []
    gets: list[subprocess.Popen[str]] = []
    try:
        (root / "origin").mkdir()
        write_random(root / "origin" / "ubuntu-24.04-live-server-amd64.iso", 64 * MiB)
        write_random(root / "origin" / "llama-3-8b.Q4_K_M.gguf", 40 * MiB)
        origin = start_origin(root / "origin", "--rate", "5M")
        tracker = start_tracker(f"sqlite:///{root / 'tracker.db'}", interval=0.5, peer_ttl=3.0)
        started += [origin, tracker]
        token = post(f"{tracker.url}/v1/pools", {"name": "edge-ams", "allow": ["127.0.0.0/8"]})["token"]
        for i in range(3):
            where = ["--site", "ams", "--rack", f"r{i + 1}", "--name", f"edge-{i + 1}"]
            extra = ["--pool", "edge-ams", *where]
            started.append(start_daemon(root / f"d{i}", root / f"d{i}.sock", tracker=tracker.url, extra=extra))
        for i in range(6):
            site, rack = ("fra", f"f{i % 2 + 1}") if i < 4 else ("ams", "r1")
            argv = ["get", f"{origin.url}/ubuntu-24.04-live-server-amd64.iso", "-o", str(root / f"get{i}.iso")]
            argv += ["--tracker", tracker.url, "--upload-time", "300", "--site", site, "--rack", rack, "--no-daemon"]
            gets.append(subprocess.Popen(shoal_argv(*argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        post(f"{tracker.url}/v1/pools/edge-ams/jobs", {"url": f"{origin.url}/llama-3-8b.Q4_K_M.gguf"}, token)
        yield tracker, started
    finally:
        for proc in gets:
            proc.kill()
            proc.wait()
        for service in reversed(started):
            service.kill()


def shoot_tracker(browser: Any, tracker: Service, out: Path) -> None:
    page = browser.new_page(viewport=VIEWPORT, color_scheme="light")
    page.goto(tracker.url)
    # Mid-flight: peers part-way, the pool's members fetching, and a chart with some history.
    wait_until(
        lambda: state(
            page,
            """() => {
              const busiest = document.querySelector('.task');
              const peers = busiest ? [...busiest.querySelectorAll('.peer')].map(p => +p.dataset.progress) : [];
              const members = [...document.querySelectorAll('.member')].filter(m => m.dataset.status === 'running');
              return peers.filter(p => p > 0.3 && p < 0.8).length >= 4 && members.length >= 2;
            }""",
        ),
        "the swarm and the push to be part-way",
        timeout=180,
        interval=0.2,
    )
    page.screenshot(path=str(out / "dashboard-tracker.png"), full_page=True)
    dark = browser.new_page(viewport=VIEWPORT, color_scheme="dark")
    dark.goto(tracker.url)
    dark.wait_for_selector(".task .peer")
    dark.wait_for_function("() => document.querySelectorAll('.member').length >= 3")
    dark.screenshot(path=str(out / "dashboard-tracker-dark.png"), full_page=True)


def shoot_mirror(browser: Any, root: Path, out: Path) -> None:
    config = root / "mirrors.toml"
    settings = f'[manager]\ntoken = "{MIRROR_TOKEN}"\nworker_timeout = "5s"\npublic_dashboard = true\n'
    config.write_text(settings + MIRRORS)
    manager = start_mirror_manager(config)
    worker_config = root / "worker.toml"
    worker_config.write_text(
        f'[worker]\nmanager = "{manager.url}"\ntoken = "{MIRROR_TOKEN}"\ndirectory = "{root / "mirror"}"\n'
        'concurrency = 4\nseed_host = "127.0.0.1"\nseed_port = 0\n'
    )
    worker = start_mirror_worker(worker_config, "big-disk")
    try:
        page = browser.new_page(viewport={"width": 1440, "height": 760}, color_scheme="light")
        page.goto(manager.url)
        page.wait_for_function(
            """() => ['success', 'failed', 'syncing'].every(s =>
                 document.querySelector(`tr.job[data-status="${s}"]`))
               && document.querySelectorAll('tr.job[data-status="success"]').length >= 2"""
        )
        page.screenshot(path=str(out / "dashboard-mirror.png"), full_page=True)
    finally:
        worker.kill()
        manager.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "img")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dashboard-shots-") as tmp, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        root = Path(tmp)
        with fleet(root) as (tracker, _):
            shoot_tracker(browser, tracker, args.out)
        shoot_mirror(browser, root, args.out)
        browser.close()
    print(f"screenshots written to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
