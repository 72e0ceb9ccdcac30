"""The tracker's expiry loop: peers that stop announcing are dropped round after round, whatever one round
met."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from shoal.testing.poll import wait_until_async
from shoal.tracker.app import TrackerService
from shoal.tracker.config import TrackerConfig


async def test_the_expiry_loop_outlives_a_failed_round(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    service = TrackerService(TrackerConfig(db=f"sqlite:///{tmp_path / 'tracker.db'}", interval=0.01))
    real_expire = service.store.expire
    rounds = 0

    async def expire(now: float, ttl: float) -> int:
        # The fault: a round failed by something other than the database (a write committed beside the
        # expiry that could not be encoded, before the tracker refused such input). Not caused for real:
        # the input validation now keeps it from happening.
        nonlocal rounds
        rounds += 1
        if rounds == 1:
            raise RuntimeError("a write staged beside the expiry failed")
        return await real_expire(now, ttl)

    service.store.expire = expire  # type: ignore[method-assign]
    async with service.store:
        loop = asyncio.ensure_future(service.expire_forever())
        try:
            await wait_until_async(lambda: rounds >= 3, "three expiry rounds")
        finally:
            loop.cancel()
            with pytest.raises(asyncio.CancelledError):
                await loop
    assert rounds >= 3
    assert any(r.levelno == logging.ERROR and "expiring peers failed" in r.message for r in caplog.records)
