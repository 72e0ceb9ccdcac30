"""`shoal get`'s progress display fits the terminal and labels its figures (shoal.cli.progress)."""

from __future__ import annotations

import io
from dataclasses import dataclass

import pytest
from rich.cells import cell_len
from rich.console import Console

from shoal.cli.progress import ProgressBar

MiB = 1 << 20
LONG_NAME = "ubuntu-24.04.1-live-server-amd64.iso"


@dataclass
class Stats:
    total: int
    done: int
    from_origin: int
    from_peers: int
    peers: int


def render(name: str, width: int, stats: Stats) -> list[str]:
    """The display after two updates a second apart: the second at ``stats``, the first 1000 MiB less."""
    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=True, color_system=None)
    now = iter([0.0, 1.0])
    bar = ProgressBar(name, console=console, clock=lambda: next(now))
    bar(Stats(stats.total, max(0, stats.done - 1000 * MiB), 0, 0, 0))
    bar(stats)
    console.print(bar.progress.get_renderable())
    return [line.rstrip() for line in out.getvalue().splitlines()]


@pytest.mark.parametrize("name", ["release.bin", LONG_NAME])
@pytest.mark.parametrize("total", [64 * MiB, 1000 * MiB])
def test_at_80_columns_two_lines_with_every_figure_whole_and_labelled(name: str, total: int) -> None:
    lines = render(name, 80, Stats(total, total // 5, 12 * MiB, total // 5 - 12 * MiB, 3))
    assert len(lines) == 2, lines
    assert all(cell_len(line) <= 80 for line in lines), lines
    first, second = lines
    assert first.startswith(name[:20]) and "━" in first  # the name (cut short with an ellipsis) and a bar
    assert f"/{total / MiB:,.1f} MiB" in first and "20%" in first and "ETA" in first
    assert f"{min(total // 5, 1000 * MiB) / MiB:.1f} MiB/s" in first
    assert second.strip().startswith("origin 12.0 MiB · peers ") and second.endswith(" · 3 peers")


@pytest.mark.parametrize("width", [70, 60, 50, 40])
def test_narrower_terminals_lose_the_bar_and_name_before_any_figure(width: int) -> None:
    lines = render(LONG_NAME, width, Stats(1000 * MiB, 200 * MiB, 12 * MiB, 188 * MiB, 1))
    assert all(cell_len(line) <= width for line in lines), lines
    assert "200.0/1,000.0 MiB" in lines[0] and "20%" in lines[0] and "200.0 MiB/s" in lines[0]
    assert lines[1].strip().startswith("origin 12.0 MiB")


def test_one_peer_is_one_peer() -> None:
    assert render("f", 80, Stats(10, 5, 5, 0, 1))[1].endswith("· 1 peer")
