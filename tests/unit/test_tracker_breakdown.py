"""The breakdown probe's wrappers (benchmarks/tracker_breakdown_probe.py): a timed function or coroutine
behaves as the original (its value, its exceptions, a cancellation thrown into it) and counts each call once,
with the thread time of its own steps only."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import tracker_breakdown_probe as probe


@pytest.fixture(autouse=True)
def _clean() -> None:
    probe.seconds.clear()
    probe.calls.clear()


def _spin(seconds: float) -> None:
    """Burn this thread's CPU for ``seconds`` of its thread time."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


async def test_a_timed_coroutine_returns_its_value_and_counts_its_steps_not_its_waits() -> None:
    released = asyncio.Event()

    async def work(x: int) -> int:
        _spin(0.01)
        await released.wait()  # suspended: the other task spins meanwhile, on this same thread
        _spin(0.01)
        return x * 2

    owner = SimpleNamespace(work=work)
    probe.time_coroutine(owner, "work", "work")
    task = asyncio.ensure_future(owner.work(21))
    await asyncio.sleep(0)
    _spin(0.05)  # the event loop's thread, while the timed coroutine waits
    released.set()
    assert await task == 42
    assert probe.calls == {"work": 1}
    assert 0.02 <= probe.seconds["work"] < 0.05


async def test_a_timed_coroutine_passes_exceptions_and_cancellation_through() -> None:
    async def fails() -> None:
        raise ValueError("no")

    started = asyncio.Event()

    async def waits() -> None:
        started.set()
        await asyncio.Event().wait()

    owner = SimpleNamespace(fails=fails, waits=waits)
    probe.time_coroutine(owner, "fails", "fails")
    probe.time_coroutine(owner, "waits", "waits")
    with pytest.raises(ValueError, match="no"):
        await owner.fails()
    task = asyncio.ensure_future(owner.waits())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert probe.calls == {"fails": 1, "waits": 1}


def test_a_timed_function_returns_or_raises_as_the_original() -> None:
    def half(x: int) -> float:
        if x < 0:
            raise ValueError("negative")
        return x / 2

    owner = SimpleNamespace(half=half)
    probe.time_function(owner, "half", "half")
    assert owner.half(3) == 1.5
    with pytest.raises(ValueError, match="negative"):
        owner.half(-1)
    assert probe.calls == {"half": 2}
    assert probe.seconds["half"] >= 0
