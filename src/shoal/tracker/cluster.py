"""Several tracker processes on one database: membership, the owner of each task, and forwarding.

The rules are core.ownership's; this module runs them on the loop, and tracker.membership keeps the member row
(its renewals run on a thread of their own: the rules between the two are written there). Every tracker on
PostgreSQL or MySQL is a member (a cluster of one is the common case; SQLite is one process's database, and
has no members). A task's routes (``/v1/tasks/{task_id}...``) are decided by its owner only, and so is a
BitTorrent swarm (keyed by its info-hash in hex; tracker.bt): a tracker that does not own the task forwards
the request to the owner and relays the reply, naming the client's address in FORWARDED_FOR (a client on the
forwarder's own host by the forwarder's advertised address) so that the owner judges the announce by the
peer's host and not by the forwarding tracker's. The header is believed only from another member's address,
and a forwarded request is never forwarded again: when the members disagree for a moment, the peer gets a 503
with Retry-After and announces again.

Between members, the fleet's credentials hold as between a peer and a tracker: a member is reached over the
fleet's TLS (its CA, and this member's certificate under mutual TLS; ``tls``), and a forwarded request
carries a request credential the owner checks, the peer's own or, on a BitTorrent route (whose passkey
travels in the path), this member's (``fleet_key``). The forwarding member checks the client's credential
(or passkey) itself before it forwards, so a stranger costs no member a forward; the owner checks it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import secrets
import socket
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from yarl import URL

from shoal.core import balance
from shoal.core.errors import StoreError
from shoal.core.messages import ClusterMember, ClusterView
from shoal.core.owner_hint import OWNER_HEADER
from shoal.core.ownership import (
    HEARTBEAT,
    JOIN_DELAY,
    Placement,
    Placements,
    TrackerMember,
    in_force,
    last_move,
    lost_tasks,
    move_times,
    owner,
    placed_from,
    refusal_seen,
    replaceable,
    replacing,
    sharing_url,
    withdrawing,
)
from shoal.core.pool_api import MEMBER_SECRET
from shoal.core.tickets import FLEET_HEADER, FleetKey
from shoal.http.json_api import ERROR_TYPE, error_body, json_error
from shoal.http.limits import read_body
from shoal.storage.cluster_store import UNPLACE_BATCH, ClusterStore
from shoal.storage.db import SqlStore
from shoal.tracker.admission import Admission
from shoal.tracker.membership import FENCED, Reading, Renewals

log = logging.getLogger("shoal.tracker.cluster")

FORWARDED_FOR = "X-Shoal-Forwarded-For"
"""The address of the client a member forwarded the request for."""
FORWARDED_TO = "X-Shoal-Forwarded-To"
"""The address at which that client reached the forwarding member (BitTorrent's loopback rule needs it)."""
FORWARD_TIMEOUT = 10.0
"""Seconds a forwarded request may take at the owner before the client gets a 503."""
RELAYED_REQUEST_HEADERS = ("Content-Type", "Authorization", MEMBER_SECRET)
"""What a forwarded request keeps of the client's headers besides its credential: a pool's routes are
authorised by a bearer token and a member's secret (tracker.pool_routes)."""
RELAYED_REPLY_HEADERS = ("Content-Type", "Retry-After", "WWW-Authenticate")
"""What a relayed reply keeps of the owner's headers."""
RETRY_AFTER = "1"
"""Seconds a client is told to wait when no member can decide its task this moment."""


def local_address(request: web.Request) -> str | None:
    """The address the client connected to: one of this host's, and one the client can reach."""
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    return sockname[0] if isinstance(sockname, tuple) else None


def reachable_address(client: str, own_url: str) -> str:
    """A client on this tracker's own host (a loopback address) as the other members can reach it: at the
    host of our advertised URL, when that is an address and not loopback too. A seeder beside its tracker
    announces over 127.0.0.1; named so to another host's tracker, it would be handed out at that host's
    loopback."""
    try:
        if not ipaddress.ip_address(client).is_loopback:
            return client
        ours = ipaddress.ip_address(urlsplit(own_url).hostname or "")
    except ValueError:
        return client
    return client if ours.is_loopback else str(ours)


def relayed_headers(get: Callable[[str], str | None]) -> dict[str, str]:
    """What a forwarded request keeps of the client's headers, each read through ``get``: the fleet's
    credential (the owner checks the peer's own) and RELAYED_REQUEST_HEADERS."""
    return {name: value for name in (FLEET_HEADER, *RELAYED_REQUEST_HEADERS) if (value := get(name))}


@dataclass(frozen=True, slots=True)
class Outbound:
    """A request a member forwards, as it read it: ``path_qs`` as the client encoded it, the client's
    ``headers`` it keeps (:func:`relayed_headers`), the client's address and the one it reached this member
    at."""

    method: str
    path_qs: str
    headers: dict[str, str]
    body: bytes
    client: str | None
    reached: str | None


@dataclass(frozen=True, slots=True)
class Relayed:
    """The owner's reply to a forwarded request, as the forwarding member gives it to the client."""

    status: int
    body: bytes
    headers: dict[str, str]


class Cluster:
    """This tracker's membership: its row, the members' rows as last read, and who owns which task."""

    def __init__(
        self,
        store: SqlStore,
        *,
        advertise: str,
        host: str,
        clock: Callable[[], float],
        scheme: str = "http",
        tls: ssl.SSLContext | None = None,
        fleet_key: FleetKey | None = None,
        balancing: balance.Balancing = balance.DEFAULT,
        unused_after: float = math.inf,
        connections: int = 100,
    ) -> None:
        """``advertise``: the URL other trackers reach this one at; "" for ``scheme``://HOST:PORT once
        listening (127.0.0.1 for a wildcard HOST: trackers on one host). ``tls``: how to reach the other members over
        https (None: the system's CAs); ``fleet_key``: the fleet's, whose credential a forward carries;
        ``balancing``: how this member gives tasks away by load (core.balance); ``unused_after``: how long a
        task placed here goes without soft state before its placement is deleted (core.balance.unused: the
        longest a live peer may go unheard of); ``connections``: the most requests it sends to the other members
        at once (the caps of the requests that may send one: forwards, relayed long-polls, scrapes' counts)."""
        self.tracker_id = secrets.token_hex(8)
        self.url = advertise.rstrip("/")
        self._host = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
        self._scheme = scheme
        self._listening = asyncio.Event()
        self.clock = clock
        self._db = store.url
        self._rows = ClusterStore(store)
        self._renewals: Renewals | None = None
        self._adopted = FENCED  # the reading the loop last acted on (drops, moves)
        self._drop: Callable[[list[str]], None] | None = None
        self._held: Callable[[], list[str]] = list
        self._moved: Callable[[float], None] = lambda at: None
        self.drops = 0
        """How often a reading made this tracker drop soft state: a decision on a copy read before a drop is
        refused (TrackerService.announce compares this before and after its read)."""
        self._member_hosts: set[str] = set()
        self._named_alike: set[str] = set()  # members already logged as advertising our URL
        self._live: set[str] = set()  # the live members at the last heartbeat
        self._session: aiohttp.ClientSession | None = None
        self._connections = connections
        self._tls = tls
        self._fleet_key = fleet_key
        self.relayed = 0
        """Requests this member forwarded to an owner that answered (its metrics: ``out``)."""
        self.relay_failed = 0
        """Requests this member forwarded to an owner that did not answer (``failed``)."""
        self.served_forwarded = 0
        """Requests another member forwarded here, served as the owner (``in``)."""
        self.balancing = balancing
        self._decided: dict[str, int] = {}  # requests decided here this balancing round, by key
        self._round_began = clock()
        self._pending: dict[str, Placement] = {}  # our moves that no reading has shown us yet
        self._seen: dict[str, tuple[Placement, float]] = {}  # placements naming us, and when first read
        self._seen_version = 0  # bumped at each change of _seen
        self._moves: tuple[tuple[TrackerMember, ...], int, tuple[float, ...]] = ((), -1, ())
        """last_move's instants, for the members tuple and _seen_version they were worked out from."""
        self._unwritten: set[str] = set()  # pending moves whose row has not been written yet
        self._replaces: dict[str, Placement | None] = {}  # for each of those, the row it replaces as we read it
        self._refused: dict[str, float] = {}  # pending moves whose row had changed when written: when we learnt so
        self._given: dict[str, float] = {}  # pending moves whose soft state we still hold: their active_from
        self._merged: tuple[Reading, Placements] | None = None
        self._settled = -math.inf  # when the loads measured show every move made to or by us (core.balance)
        self._full = False  # the database held MAX_PLACEMENTS at our last round (logged once)
        self._unused_after = unused_after
        self._used: dict[str, float] = {}  # tasks placed on us: when we last held soft state of one
        self._withdrawn: dict[str, Placement] = {}  # placements on us we delete: not decided while read
        self._undeleted: set[str] = set()  # of those, the ones whose delete has not committed yet
        self.unplaced = 0
        """Placements on this member it deleted, their tasks unused (its metrics)."""
        self.placed = 0
        """Tasks this member placed on others by load (its metrics)."""
        self.load = 0.0
        """Requests this member decided a second over its latest balancing round."""

    def listening(self, port: int) -> None:
        """The port we listen on (http.listen.ON_LISTENING): our URL when none is advertised."""
        if not self.url:
            host = f"[{self._host}]" if ":" in self._host else self._host
            self.url = f"{self._scheme}://{host}:{port}"
        self._listening.set()

    @property
    def members(self) -> tuple[TrackerMember, ...]:
        """The members' rows, as our latest renewal read them."""
        return (FENCED if self._renewals is None else self._renewals.reading).members

    @property
    def rejoins(self) -> int:
        """How often our row was registered again since we joined (tracker.membership)."""
        return 0 if self._renewals is None else self._renewals.rejoins

    @property
    def last_renewal(self) -> float:
        """Seconds the latest renewal of our row took (tracker.membership)."""
        return 0.0 if self._renewals is None else self._renewals.last_renewal

    async def join(self) -> None:
        """Register our row (its renewals then go on by themselves) once we listen."""
        await self._listening.wait()
        self._renewals = Renewals(self._db, self.tracker_id, self.url, self.clock)
        await self._renewals.start()
        await self._learn_hosts()
        log.info("tracker %s joined as %s; %d members", self.tracker_id, self.url, len(self.members))

    async def leave(self) -> None:
        """Decide nothing more, and delete our row."""
        if self._renewals is not None:
            await self._renewals.stop()
        if self._session is not None:
            await self._session.close()

    async def heartbeat_forever(
        self,
        *,
        drop: Callable[[list[str]], None],
        held: Callable[[], list[str]],
        moved: Callable[[float], None],
    ) -> None:
        """Every HEARTBEAT: tell the renewals' watchdog the loop runs, act on the latest reading, and learn the
        members' addresses. ``drop`` gets the tasks of ``held`` (those whose soft state this tracker keeps)
        that another member owns now, to forget; ``moved`` the time a member's row was found gone (one that
        left: :meth:`last_move` cannot see it)."""
        self._drop, self._held, self._moved = drop, held, moved
        while True:
            if self._renewals is not None:
                self._renewals.tick()
            try:
                self._reading()
                await self._learn_hosts()
                await self._balance()
                await self._unplace_unused()
            except Exception:
                # A heartbeat that failed must not end the next ones: without their ticks the renewals' watchdog
                # takes the loop for wedged, the row lapses, and the tracker answers 503 for good.
                log.exception("tracker %s: a heartbeat failed", self.tracker_id)
            await asyncio.sleep(HEARTBEAT)

    def _reading(self) -> Reading:
        """The latest reading of the member rows, acted on first if it is new: no await between this and a
        decision that uses it, so a task held from before an incarnation that must forget it is never decided
        on its old soft state."""
        if self._renewals is None or self._drop is None:
            return FENCED  # not joined, or not yet acting on readings: decide nothing
        reading = self._renewals.reading
        if reading is not self._adopted:
            self._adopt(reading, self._drop)
        if self._given and (now := self.clock()) >= min(self._given.values()):
            # Tasks we placed elsewhere are theirs from active_from on, whether or not a reading says so yet.
            gone = [key for key, at in self._given.items() if now >= at]
            for key in gone:
                del self._given[key]
            self.drops += 1
            self._drop(gone)
        return reading

    def _adopt(self, reading: Reading, drop: Callable[[list[str]], None]) -> None:
        if reading.forget_at > self._adopted.incarnation:
            # We joined again and another member may have decided our tasks meanwhile: their soft state
            # here is older than theirs, and so are our moves not written yet (written now, one would replace
            # a placement that member made since).
            self.drops += 1
            drop(self._held())
            for key in self._unwritten:
                self._pending.pop(key, None)
                self._given.pop(key, None)
                self._replaces.pop(key, None)
            self._unwritten.clear()
            self._merged = None
        self._adopted = reading
        if reading.renewed == -math.inf:
            return  # fenced: nothing to learn from it
        now = self.clock()
        self._learn_placements(reading, now)
        live = {m.tracker_id for m in reading.members if m.live(now, reading.renewed)}
        if self._live - live:
            self._moved(now)  # a member left (its row is gone) or died since the last reading
        self._live = live
        placements = self._placements(reading)
        if lost := lost_tasks(self._held(), self.tracker_id, reading.members, now, reading.renewed, placements):
            self.drops += 1
            drop(lost)

    def _learn_placements(self, reading: Reading, now: float) -> None:
        """Note when each placement naming us was first read (core.ownership.placed_from), and let go of our
        pending moves that the rows now show (or that a later move replaced), and of those whose write found
        the row changed once a reading shows the rows as they were then (core.ownership.refusal_seen)."""
        placements = reading.placements
        for key, placed in placements.items():
            if placed.tracker_id == self.tracker_id and self._seen.get(key, (None,))[0] != placed:
                self._seen[key] = (placed, now)
                self._seen_version += 1
                self._settled = max(self._settled, balance.settled(placed_from(placed, now), self.balancing))
        for key in [key for key, (placed, _) in self._seen.items() if placements.get(key) != placed]:
            del self._seen[key]
            self._seen_version += 1
            self._used.pop(key, None)
        for key in [key for key in self._withdrawn if not withdrawing(key, self._withdrawn, placements)]:
            del self._withdrawn[key]  # the row is gone (or another replaced it): the rows say who decides now
            self._undeleted.discard(key)
        shown = [
            key
            for key, mine in self._pending.items()
            if (row := placements.get(key)) is not None and row.active_from >= mine.active_from
        ]
        for key in shown:
            del self._pending[key]
            self._unwritten.discard(key)
            self._replaces.pop(key, None)
            self._refused.pop(key, None)
        refused = [key for key, at in self._refused.items() if refusal_seen(at, reading.renewed)]
        regained = False
        for key in refused:
            # From this reading on the rows alone say whether we decide the task: we do again if they make us
            # its owner, read with grace when we had let its soft state go at the move's active_from.
            del self._refused[key]
            self._pending.pop(key, None)
            regained |= self._given.pop(key, None) is None
        if shown or refused:
            self._merged = None
        if regained:
            self._moved(now)

    def _placements(self, reading: Reading) -> Placements:
        """The placements by ``reading``, and our moves it does not show yet."""
        if not self._pending:
            return reading.placements
        if self._merged is None or self._merged[0] is not reading:
            merged = dict(reading.placements)
            for key, mine in self._pending.items():
                if (row := merged.get(key)) is None or row.active_from < mine.active_from:
                    merged[key] = mine
            self._merged = (reading, merged)
        return self._merged[1]

    def owner(self, task_id: str) -> TrackerMember | None:
        """The member that decides ``task_id`` now; None when none can (we are fenced, or nobody is live)."""
        reading = self._reading()
        now = self.clock()
        if not in_force(reading.renewed, now):
            return None
        current = owner(task_id, reading.members, now, reading.renewed, self._placements(reading))
        if current is not None and current.tracker_id == self.tracker_id:
            if task_id in self._withdrawn:
                return None  # we delete its placement: another member may decide it on a reading without the row
            if now < reading.counts_from:
                return None  # our row counts for the others, but one of them may still decide on an older reading
            seen = self._seen.get(task_id)
            if seen is not None and seen[0].active_from <= now < placed_from(*seen):
                return None  # placed on us, but another member may still decide it on an older reading
        return current

    def last_move(self, now: float) -> float:
        """When tasks last moved between the members, by their rows: the latest ``active_from`` of a member
        counting by ``now`` and the latest ``expires`` of one dead by then. A task is owned anew from that
        instant on, before any heartbeat has noticed. Asked on every announce: the instants are worked out
        once for each reading and each change of the placements naming us, and looked up here."""
        members = self.members
        if self._moves[0] is not members or self._moves[1] != self._seen_version:
            # A task placed on us is ours from when we decide it (placed_from), its grace counted from then.
            starts = [placed_from(placed, seen) for placed, seen in self._seen.values()]
            self._moves = (members, self._seen_version, move_times(members, starts))
        return last_move(self._moves[2], now)

    def client(self) -> aiohttp.ClientSession:
        """The session requests to the other members go out on, made at the first (in the event loop): one
        connection for each request it may send at once (``connections``); each request carries its own
        timeout."""
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._connections)
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        return self._session

    def decided(self, key: str) -> None:
        """Count a request about the task or swarm ``key`` served here: the load the members balance by."""
        self._decided[key] = self._decided.get(key, 0) + 1

    def mine(self, task_id: str) -> bool:
        current = self.owner(task_id)
        return current is not None and current.tracker_id == self.tracker_id

    def view(self) -> ClusterView:
        now = self.clock()
        reading = FENCED if self._renewals is None else self._renewals.reading
        placed = Counter(p.tracker_id for p in reading.placements.values())
        members = tuple(
            ClusterMember(
                m.tracker_id,
                m.url,
                m.active_from,
                m.expires,
                m.live(now, reading.renewed),
                m.load,
                placed[m.tracker_id],
            )
            for m in sorted(reading.members, key=lambda m: m.tracker_id)
        )
        return ClusterView(self.tracker_id, members, reading.deciding(now))

    def forwarded(self, request: web.Request) -> bool:
        """Whether another member forwarded ``request``."""
        return self.forwarded_by(request.remote, FORWARDED_FOR in request.headers)

    def forwarded_by(self, remote: str | None, named: bool) -> bool:
        """Whether a request from ``remote`` that ``named`` a client in FORWARDED_FOR was forwarded by another
        member. The header counts only from a member's host: set by anyone else, it is ignored, or a peer could
        name another host as itself, or make a member refuse its announces as a forwarding loop."""
        return named and remote in self._member_hosts

    def client_address(self, request: web.Request) -> str:
        """The address of the peer behind ``request``: FORWARDED_FOR when a member forwarded it."""
        if self.forwarded(request):
            return request.headers[FORWARDED_FOR]
        return request.remote or ""

    def addresses(self, request: web.Request) -> tuple[str | None, str | None]:
        """The client's address and the address it reached a tracker at, as a forwarding member saw them."""
        return self.seen(request.remote, local_address(request), request.headers.get)

    def seen(
        self, remote: str | None, local: str | None, header: Callable[[str], str | None]
    ) -> tuple[str | None, str | None]:
        """:meth:`addresses` of a request from ``remote`` that reached this member at ``local``, its headers
        read through ``header``."""
        forwarded_for = header(FORWARDED_FOR)
        if forwarded_for is not None and self.forwarded_by(remote, True):
            return forwarded_for, header(FORWARDED_TO) or None
        return remote, local

    def deciding(self, key: str, forwarded: bool, what: str = "task") -> TrackerMember | str:
        """Who serves a request about ``key`` that another member ``forwarded`` (or not): the member that owns
        it (this one, or one to relay the request to), or why none can at the moment (a forwarded request is
        never forwarded again: when the members disagree for a moment, the client gets a 503). A request this
        member serves is counted: as served for another member, and as load to balance by (a task's or a
        swarm's; a pool stays with the hash: its requests are few, and a move ends its members' long-polls)."""
        current = self.owner(key)
        if current is not None and current.tracker_id == self.tracker_id:
            if forwarded:
                self.served_forwarded += 1
            if what != "pool":
                self.decided(key)
            return current
        if current is None:
            return f"no tracker can decide this {what} at the moment"
        return f"the {what} is moving" if forwarded else current

    async def forward(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
        key: str,
        patience: float = FORWARD_TIMEOUT,
        *,
        what: str = "task",
        again: str = "announce",
        slots: Admission | None = None,
    ) -> web.StreamResponse:
        """Serve a request about ``key`` (a task id, a BitTorrent info-hash in hex, a pool's key): here when
        we own it, else at its owner, who has ``patience`` seconds to answer. A 503 names the key as ``what``
        (task, swarm, pool) and tells the client to ``again`` (announce, ask) after Retry-After. A request
        relayed to the owner holds one of ``slots`` until it answers, and is refused at once when none is
        free (tracker.admission: a forward counts where it is made)."""
        to = self.deciding(key, self.forwarded(request), what)
        if isinstance(to, str):
            return json_error(503, f"{to}; {again} again", **{"Retry-After": RETRY_AFTER})
        if to.tracker_id == self.tracker_id:
            return await handler(request)
        if slots is None:
            return await self.relay(request, to, patience=patience, what=what, again=again)
        if not slots.enter():
            return slots.busy(again)
        try:
            return await self.relay(request, to, patience=patience, what=what, again=again)
        finally:
            slots.leave()

    async def relay(
        self,
        request: web.Request,
        to: TrackerMember,
        path_qs: str | None = None,
        *,
        patience: float = FORWARD_TIMEOUT,
        what: str = "task",
        again: str = "announce",
    ) -> web.Response:
        """``request`` (or a GET of ``path_qs``) answered by member ``to``, as :meth:`pass_on` says."""
        relayed = await self.pass_on(
            await self.outbound(request, path_qs), to, patience=patience, what=what, again=again
        )
        return web.Response(status=relayed.status, body=relayed.body, headers=relayed.headers)

    async def pass_on(
        self, request: Outbound, to: TrackerMember, *, patience: float = FORWARD_TIMEOUT, what: str, again: str
    ) -> Relayed:
        """``request`` answered by member ``to`` within ``patience`` seconds, its reply relayed as it came; a 503
        with Retry-After when ``to`` does not answer. The reply names ``to`` in OWNER_HEADER (core.owner_hint)
        whatever its status, a shed 503 included, and so does the 503 of a forward that timed out (``to`` is
        up but busy); not that of an owner we could not connect to, which may be gone: its peers are better
        off asking their lists, whose members name the task's next owner. The 503's words are ``what`` and
        ``again``'s, as :meth:`forward`'s."""
        named = {OWNER_HEADER: to.url}
        try:
            status, payload, kept = await self.send(request, to, patience)
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.relay_failed += 1
            log.info("forwarding %s to %s failed: %s", request.path_qs, to.url, exc)
            busy = isinstance(exc, TimeoutError) and not isinstance(exc, aiohttp.ConnectionTimeoutError)
            message = error_body(f"the {what}'s tracker did not answer; {again} again")
            headers = {"Content-Type": ERROR_TYPE, "Retry-After": RETRY_AFTER, **(named if busy else {})}
            return Relayed(503, message, headers)
        self.relayed += 1
        return Relayed(status, payload, {**kept, **named})

    async def outbound(self, request: web.Request, path_qs: str | None = None) -> Outbound:
        """``request`` (or a GET of ``path_qs``, percent-encoded) as a member forwards it."""
        client, reached = self.addresses(request)
        kept = relayed_headers(request.headers.get)
        if path_qs is not None:
            return Outbound("GET", path_qs, kept, b"", client, reached)
        # As the client encoded it: a BitTorrent query's binary values do not survive a decode and re-encode.
        return Outbound(request.method, request.rel_url.raw_path_qs, kept, await read_body(request), client, reached)

    async def ask(
        self,
        request: web.Request,
        to: TrackerMember,
        path_qs: str | None = None,
        *,
        patience: float = FORWARD_TIMEOUT,
    ) -> tuple[int, bytes, dict[str, str]]:
        """Forward ``request`` (or a GET of ``path_qs``, percent-encoded) to member ``to``, as :meth:`send`."""
        return await self.send(await self.outbound(request, path_qs), to, patience)

    async def send(
        self, request: Outbound, to: TrackerMember, patience: float = FORWARD_TIMEOUT
    ) -> tuple[int, bytes, dict[str, str]]:
        """``request`` forwarded to member ``to``: its status, body and the headers a relayed reply keeps.
        Raises aiohttp.ClientError or TimeoutError when ``to`` does not answer within ``patience`` seconds."""
        session = self.client()
        headers = {
            FORWARDED_FOR: reachable_address(request.client or "", self.url),
            FORWARDED_TO: request.reached or "",
            **request.headers,
        }
        if FLEET_HEADER not in headers and self._fleet_key is not None:
            headers[FLEET_HEADER] = self._fleet_key.credential(self.clock())  # the owner checks it too
        target = URL(to.url + request.path_qs, encoded=True)
        tls = self._tls if self._tls is not None and to.url.startswith("https://") else True
        limit = aiohttp.ClientTimeout(total=patience)
        body = request.body or None
        async with session.request(request.method, target, data=body, headers=headers, ssl=tls, timeout=limit) as reply:
            payload = await reply.read()
            kept = {k: v for k, v in reply.headers.items() if k in RELAYED_REPLY_HEADERS}
            return reply.status, payload, kept

    async def _balance(self) -> None:
        """At the end of each balancing round: publish our load, and place tasks on the least loaded member
        when ours is above the mean (core.balance). Then write the moves not yet written; one whose write
        failed is written again at the next heartbeat (until then nobody else knows it, and we have
        stopped deciding it at its active_from: its announces are refused as moving)."""
        now = self.clock()
        elapsed = now - self._round_began
        if elapsed >= self.balancing.round:
            decided, self._decided, self._round_began = self._decided, {}, now
            rates = {key: count / elapsed for key, count in decided.items()}
            load = self.load = sum(rates.values())
            if self._renewals is not None:
                self._renewals.load = load
            reading = self._reading()
            if reading.deciding(now) and now >= self._settled:
                self._place(reading, now, load, rates)
        for key in list(self._unwritten):
            placed = self._pending.get(key)
            if placed is None:
                self._unwritten.discard(key)
                continue
            try:
                landed = await self._rows.place(placed, self._replaces.get(key))
            except StoreError as exc:
                log.warning("placing task %s on tracker %s failed: %s; trying again", key, placed.tracker_id, exc)
                continue
            if key not in self._unwritten:
                continue  # a reading (or joining again) let go of the move meanwhile
            self._unwritten.discard(key)
            self._replaces.pop(key, None)
            if not landed:
                # Our reading was stale. Until one taken after this shows the rows, we keep to our record of
                # the move (we stop at its active_from): the rows may say it took effect already.
                self._refused[key] = self.clock()
                log.info(
                    "tracker %s: the placement of task %s on tracker %s was not written: the task's row changed "
                    "since it was read; the move is dropped",
                    self.tracker_id,
                    key,
                    placed.tracker_id,
                )

    async def _unplace_unused(self) -> None:
        """Delete the placements on us whose task we have decided and held no soft state of for
        ``unused_after`` (core.balance.unused), having stopped deciding those tasks first (core.ownership,
        "Placements"); a delete that failed is sent again at the next heartbeat, and until a reading lacks
        the row we decide none of them."""
        reading = self._reading()
        now = self.clock()
        if self._seen and reading.deciding(now):
            held = set(self._held())
            for key, (placed, seen) in list(self._seen.items()):  # mine() may adopt a new reading
                if key in held:
                    self._used[key] = now
                    continue
                if key in self._withdrawn or len(self._undeleted) >= UNPLACE_BATCH:
                    continue
                began = max(placed_from(placed, seen), reading.counts_from)
                used = self._used.get(key, -math.inf)
                if (
                    now >= began
                    and balance.unused(began, used, now, self._unused_after)
                    and self.mine(key)
                    and self._seen.get(key, (None,))[0] == placed
                ):
                    self._withdrawn[key] = placed  # from now on we refuse it: before the delete is sent
                    self._undeleted.add(key)
        if not self._undeleted:
            return
        sent = [self._withdrawn[key] for key in self._undeleted]
        try:
            gone = await self._rows.unplace(sent)
        except StoreError as exc:
            log.warning("deleting %d placements of unused tasks failed: %s; trying again", len(sent), exc)
            return
        self._undeleted.difference_update(p.key for p in sent)
        self.unplaced += len(gone)
        if gone:
            log.info(
                "tracker %s: deleted the placements of %d tasks unused here for %.0f s: their hash owners decide them",
                self.tracker_id,
                len(gone),
                self._unused_after,
            )

    def _place(self, reading: Reading, now: float, load: float, rates: dict[str, float]) -> None:
        loads = {m.tracker_id: m.load for m in reading.members if m.live(now, reading.renewed)}
        loads[self.tracker_id] = load
        placements = self._placements(reading)
        movable = {
            key: rate
            for key, rate in rates.items()
            if key not in self._pending and self.mine(key) and replaceable(placements.get(key), now)
        }
        full = len(reading.placements) >= balance.MAX_PLACEMENTS
        if full and not self._full:
            log.warning(
                "tracker %s: the database holds %d placements, the most there may be: no task is placed until "
                "the trackers they name restart (core.balance)",
                self.tracker_id,
                len(reading.placements),
            )
        self._full = full
        chosen = balance.moves(self.tracker_id, loads, movable, self.balancing, len(reading.placements))
        for key, target in chosen:
            before = placements.get(key)
            placed = replacing(key, target, before, now + JOIN_DELAY)
            self._pending[key] = placed
            self._unwritten.add(key)
            self._replaces[key] = before
            self._given[key] = placed.active_from
            self._settled = max(self._settled, balance.settled(placed_from(placed, now), self.balancing))
        if chosen:
            self._merged = None
            self.placed += len(chosen)
            log.info(
                "tracker %s: load %.0f/s against a mean of %.0f/s: placing %d tasks (%.0f/s) on tracker %s",
                self.tracker_id,
                load,
                sum(loads.values()) / len(loads),
                len(chosen),
                sum(rates[key] for key, _ in chosen),
                chosen[0][1],
            )

    async def _learn_hosts(self) -> None:
        """The addresses of the other members, whose FORWARDED_FOR is believed."""
        for alike in sharing_url(self.tracker_id, self.members, self.clock()):
            if alike.tracker_id not in self._named_alike:
                self._named_alike.add(alike.tracker_id)
                log.error(
                    "tracker %s advertises this tracker's URL, %s: requests forwarded to either come back to the "
                    "one that forwards them, and the tasks of one are never answered; give each tracker the "
                    "address the others reach it at (--advertise http://THIS-HOST:PORT)",
                    alike.tracker_id,
                    alike.url,
                )
        hosts: set[str] = set()
        loop = asyncio.get_running_loop()
        for member in self.members:
            if member.tracker_id == self.tracker_id:
                continue  # a client on our own host is no member forwarding to us
            host = urlsplit(member.url).hostname or ""
            try:
                hosts.add(str(ipaddress.ip_address(host)))
            except ValueError:
                with contextlib.suppress(OSError):
                    for *_, address in await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM):
                        hosts.add(str(address[0]))
        self._member_hosts = hosts
