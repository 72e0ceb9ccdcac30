"""`shoal demo` shows its peers' progress while they run, and ends beside what the fetch costs without Shoal."""

from __future__ import annotations

import re
import subprocess

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
    # Its peers serve on loopback, as its tracker and origin do: none listens on every interface.
    opened = re.findall(r"no fleet credential: anyone who can reach (\S+) may", result.stderr)
    assert len(opened) == 2 and all(where.startswith("127.0.0.1:") for where in opened), result.stderr
    lines = result.stdout.splitlines()
    first_done = next(i for i, line in enumerate(lines) if re.match(r"peer\d has the file after ", line))
    assert any(PROGRESS.match(line) for line in lines[:first_done]), result.stdout
    assert sum(bool(re.match(r"peer[01] has the file after \d+\.\ds \(origin ", line)) for line in lines) == 2
    without = next(line for line in lines if "without Shoal " in line)
    assert "8.0 MiB = 2 x the file" in without and "4.0s" in without  # 2 x 4 MiB at 2 MiB/s
    with_shoal = next(line for line in lines if "with Shoal " in line)
    assert re.search(r"\d+\.\d+ MiB = 1\.\d\d x the file", with_shoal), with_shoal
