"""An announce that changes nothing durable touches no database (issue 27), proven by counting statements.

A tracker runs in this process over its real HTTP API, on each SQL backend, and every statement any engine
of the process sends is counted (SQLAlchemy's ``before_cursor_execute``, and on PostgreSQL the driver's
query log of each connection checked out, for what the store sends through the driver itself). Peers join
a task, announce their pieces, take and release origin leases, report their bytes by scope and leave: soft
state, held in the tracker's memory, so none of it may send a statement. A hash report is a durable fact:
the control that shows the counter counts.

The membership heartbeat of a tracker on a shared database (tracker.cluster) and the pools' sweep
(tracker.pools) run on timers of their own and write their own tables; their statements are not the
announces' and are left out by table.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.pool import Pool

from shoal.core.ids import task_id_for_url
from shoal.core.messages import AnnounceRequest, AnnounceResponse, ScopeBytes
from shoal.http.listen import listen
from shoal.peer.tracker_client import TrackerClient
from shoal.testing.hostile import identity
from shoal.tracker.app import RUNNER_OPTIONS, build_app
from shoal.tracker.config import TrackerConfig

from .driver import IDENTITY, PIECES, bitfield, digest

URL = "http://origin.example/quiet.img"
TASK_ID = task_id_for_url(URL)
OTHER_SUBSYSTEMS = re.compile(r"\b(trackers|tracker_cluster|pools|pool_members|pool_jobs|pool_assignments)\b")
"""Tables of the timers that run beside the announces (membership, pools), not written by an announce."""


CONNECTION_ONLY = re.compile(r"^\s*(;|BEGIN|COMMIT|ROLLBACK)", re.IGNORECASE)
"""What a PostgreSQL connection sends of its own (the pool's ping, transaction control), not an announce's."""


class Statements:
    """The statements the process's engines send while counting, but those of OTHER_SUBSYSTEMS: through
    SQLAlchemy, and what the tracker's store sends through the PostgreSQL driver itself
    (SqlStore.driver_call), heard from each connection checked out meanwhile."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self._logging: list[Any] = []  # asyncpg connections this counts the queries of

    def __call__(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not OTHER_SUBSYSTEMS.search(statement) and not CONNECTION_ONLY.match(statement):
            self.seen.append(" ".join(statement.split()))

    def _logged(self, query: Any) -> None:
        self(None, None, query.query)

    def _checkout(self, _dbapi: Any, record: Any, _proxy: Any) -> None:
        driver = record.driver_connection
        if hasattr(driver, "add_query_logger") and driver not in self._logging:
            driver.add_query_logger(self._logged)
            self._logging.append(driver)

    @contextmanager
    def counting(self) -> Iterator[list[str]]:
        self.seen = []
        event.listen(Engine, "before_cursor_execute", self)
        event.listen(Pool, "checkout", self._checkout)
        try:
            yield self.seen
        finally:
            event.remove(Engine, "before_cursor_execute", self)
            event.remove(Pool, "checkout", self._checkout)
            for driver in self._logging:
                driver.remove_query_logger(self._logged)
            self._logging = []


@pytest.fixture
async def tracker(db_url: str) -> AsyncIterator[TrackerClient]:
    config = TrackerConfig(db=db_url, interval=30.0, peer_ttl=90.0)
    runner, port = await listen(build_app(config), "127.0.0.1", 0, **RUNNER_OPTIONS)
    try:
        async with aiohttp.ClientSession() as session:
            yield TrackerClient(f"http://127.0.0.1:{port}", session)
    finally:
        await runner.cleanup()


async def announce(client: TrackerClient, name: str, **fields: Any) -> AnnounceResponse:
    me = identity(name)
    values: dict[str, Any] = {"url": URL, "port": 7000, "host": "10.0.0.1", "generation": 1, **fields}
    return await client.announce(TASK_ID, AnnounceRequest(peer_id=me.peer_id, secret=me.secret, **values))


async def test_an_announce_that_changes_nothing_durable_sends_no_statement(tracker: TrackerClient) -> None:
    # The task is made and its manifest learned: durable, written.
    first = await announce(tracker, "a", generation=0, event="started")
    await announce(tracker, "a", generation=first.generation, event="started", origin=IDENTITY)
    statements = Statements()
    with statements.counting() as seen:
        # Soft state only: a second peer joins the known task, both announce what they hold and take leases,
        # one gives a lease back and reports its bytes by scope, a third comes and goes.
        joined = await announce(tracker, "b", event="started", origin=IDENTITY, site="s1", rack="r1")
        leased = await announce(tracker, "a", bitfield=bitfield(), want_leases=4, site="s1", rack="r1")
        assert joined.generation == 1 and len(leased.leases) == 4
        await announce(tracker, "b", bitfield=bitfield(), want_leases=2, site="s1", rack="r1")
        await announce(tracker, "a", bitfield=bitfield(), released=leased.leases[-1:], site="s1", rack="r1")
        await announce(tracker, "b", bitfield=bitfield(), received=ScopeBytes(origin=0, rack=1 << 18))
        await announce(tracker, "c", event="started", origin=IDENTITY)
        await announce(tracker, "c", event="stopped")
    assert seen == [], f"announces that changed nothing durable sent: {seen}"

    # The control: a hash report of a leased piece is durable, and its write is counted.
    piece = leased.leases[0]
    with statements.counting() as seen:
        await announce(tracker, "a", bitfield=bitfield(piece), done={piece: digest(piece)})
    assert any(re.search(r"\bpiece_hashes\b", s) for s in seen), seen
    assert 0 <= piece < PIECES
