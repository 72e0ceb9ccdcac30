"""shoal.http.event_loop: which loop a server process runs on, for what the operator asked."""

from __future__ import annotations

import asyncio

import pytest

from shoal.core.errors import UsageError
from shoal.http.event_loop import choose, run


@pytest.mark.parametrize(
    ("asked", "available", "chosen"),
    [
        ("auto", True, "uvloop"),
        ("auto", False, "asyncio"),  # a host without uvloop loses nothing but speed
        ("uvloop", True, "uvloop"),
        ("asyncio", True, "asyncio"),  # the operator turned it off
        ("asyncio", False, "asyncio"),
    ],
)
def test_the_loop_chosen(asked: str, available: bool, chosen: str) -> None:
    assert choose(asked, uvloop_available=available) == chosen


def test_uvloop_insisted_on_without_it_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match=r"uvloop is not installed \(pip install 'shoal\[tracker\]'\)") as caught:
        choose("uvloop", uvloop_available=False)
    assert caught.value.exit_code == 2


def test_an_unknown_loop_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown event loop 'trio'"):
        choose("trio", uvloop_available=True)


def test_run_runs_the_coroutine_on_asyncios_loop() -> None:
    async def which() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert run(which(), "asyncio").startswith("asyncio")
