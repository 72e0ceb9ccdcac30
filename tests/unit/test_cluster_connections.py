"""The connections a tracker of a cluster keeps to the other members (tracker.cluster.Cluster.client)."""

from __future__ import annotations

import asyncio

from shoal.tracker.config import TrackerConfig
from shoal.tracker.service import TrackerService


def test_the_cluster_has_a_connection_for_every_request_the_caps_let_through_at_once() -> None:
    """Forwards (``max_inflight``), relayed long-polls and a scrape's requests for counts each take a slot of
    their own cap; the session they go out on has a connection for each, so none waits for one."""
    config = TrackerConfig(
        db="postgresql://postgres@127.0.0.1:5432/unused", max_inflight=7, max_relayed_polls=5, max_relayed_scrapes=2
    )

    async def limit() -> int:
        service = TrackerService(config)  # no connection is opened before it starts
        assert service.cluster is not None
        session = service.cluster.client()
        try:
            return session.connector.limit if session.connector is not None else 0
        finally:
            await session.close()

    assert asyncio.run(limit()) == 7 + 5 + 2
