"""The progress display of a download on a terminal: `shoal get`'s bar, and one per peer in `shoal demo`.

Rules: a download takes two lines, so that it fits 80 columns and every figure keeps its label::

    release.bin ━━━━━━━━━━━━━━━━━━━━━━━ 19% 12.0/64.0 MiB 3.2 MiB/s ETA 0:00:16
      origin 12.0 MiB · peers 40.0 MiB · 3 peers

The bar takes the room the rest leaves. On a narrower terminal the first line gives way from the left:
the bar shrinks and the name is cut short (with an ellipsis), then the bar goes, then the name, then the
ETA, so the figures (the total included) are never cut; the second line is cut at the edge. Sizes and
rates are 1024-based, like every other figure Shoal prints.

rich is imported when a display is made: a `shoal get` in a script (no terminal) never pays for it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from shoal.core.units import format_bytes

if TYPE_CHECKING:
    from rich.console import Console

RATE_WINDOW = 10  # progress updates come every 0.2 s: a two-second moving average
NAME_WIDTH = 24  # the longest name shown whole; longer ones end in an ellipsis
NAME_MIN = 8  # a name cut shorter than this says nothing: the line shows the figures alone
BAR_MIN = 6


class StatsLike(Protocol):
    """A download's counters: the engine's Stats, or a daemon's progress line."""

    @property
    def total(self) -> int: ...
    @property
    def done(self) -> int: ...
    @property
    def from_origin(self) -> int: ...
    @property
    def from_peers(self) -> int: ...
    @property
    def peers(self) -> int: ...


def sources(from_origin: int, from_peers: int, peers: int) -> str:
    """The second line: where the bytes came from, each figure labelled."""
    return f"origin {format_bytes(from_origin)} · peers {format_bytes(from_peers)} · {peers} peer{'s' * (peers != 1)}"


class Rate:
    """Bytes per second over the last RATE_WINDOW samples, as text (rich's own speed column is decimal)."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, int]] = deque(maxlen=RATE_WINDOW)

    def __call__(self, done: int, now: float) -> str:
        self._samples.append((now, done))
        (t0, done0), (t1, done1) = self._samples[0], self._samples[-1]
        return f"{format_bytes((done1 - done0) / (t1 - t0))}/s" if t1 > t0 else "?"


def make_progress(console: Console, **options: Any) -> Any:
    """A rich Progress whose tasks each render as the two lines this module's docstring draws; a task's
    fields: ``rate`` and ``sources`` (text)."""
    from rich.console import RenderableType
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        ProgressColumn,
        Task,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.table import Column, Table
    from rich.text import Text

    name = TextColumn("[bold]{task.description}", table_column=Column(no_wrap=True, overflow="ellipsis"))
    bar = BarColumn(bar_width=None)
    figures: list[ProgressColumn] = [
        TaskProgressColumn(),
        DownloadColumn(binary_units=True),
        TextColumn("{task.fields[rate]}"),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    ]

    class TwoLineProgress(Progress):
        def get_renderables(self) -> Iterable[RenderableType]:
            for task in self.tasks:
                if task.visible:
                    yield self.line(task)
                    yield Text("  " + task.fields.get("sources", ""), no_wrap=True, overflow="ellipsis")

        def line(self, task: Task) -> Table:
            """The first line, fitted to the console: the figures whole, the name and the bar in the room
            left; when there is too little, the bar goes first, then the name, then the ETA."""
            cells = [column(task) for column in figures]
            room = self.console.width - sum(_cell_len(cell) + 1 for cell in cells)
            chosen: list[tuple[ProgressColumn, RenderableType]] = list(zip(figures, cells, strict=True))
            name_width = min(NAME_WIDTH, room - BAR_MIN - 2)
            if name_width >= NAME_MIN:
                chosen = [(name, name(task)), (bar, bar(task)), *chosen]
            elif room - 1 >= NAME_MIN:
                name_width = min(NAME_WIDTH, room - 1)
                chosen = [(name, name(task)), *chosen]
            elif room < 0:
                chosen = chosen[:3]  # the percentage, the bytes, the rate
            table = Table.grid(padding=(0, 1), expand=bar in dict(chosen))
            for column, _ in chosen:
                spec = column.get_table_column().copy()
                if column is name:
                    spec.max_width = name_width
                elif column is bar:
                    spec.ratio = 1
                else:
                    spec.no_wrap = True
                table.columns.append(spec)
            table.add_row(*(cell for _, cell in chosen))
            return table

    return TwoLineProgress(name, bar, *figures, console=console, **options)


def _cell_len(cell: Any) -> int:
    """The width of a figure column's cell (rich's columns render figures as Text)."""
    from rich.text import Text

    assert isinstance(cell, Text)
    return cell.cell_len


class ProgressBar:
    """`shoal get`'s progress on stderr: bytes, rate, ETA, and what came from the origin and from peers."""

    def __init__(self, name: str, console: Console | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        from rich.console import Console

        self.progress = make_progress(console or Console(stderr=True), transient=False)
        self.task = self.progress.add_task(name, total=None, rate="?", sources=sources(0, 0, 0))
        self._rate = Rate()
        self._clock = clock

    def __call__(self, stats: StatsLike) -> None:
        self.progress.update(
            self.task,
            total=stats.total or None,
            completed=stats.done,
            rate=self._rate(stats.done, self._clock()),
            sources=sources(stats.from_origin, stats.from_peers, stats.peers),
        )

    def __enter__(self) -> ProgressBar:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()
