"""The tracker's BitTorrent endpoints, for standard clients (aria2c, ctorrent, libtorrent, transmission):

    GET /announce   BEP 3, with compact peers (BEP 23) and IPv6 peers in ``peers6`` (BEP 7)
    GET /scrape     BEP 48
    GET /announce/PASSKEY, /scrape/PASSKEY   the same, with a passkey (or ``?passkey=PASSKEY``)

Parsing, swarm state and replies live in core.bt_tracker; this module wires them to aiohttp. An announce
(``GET /announce``) is answered by :meth:`BtTracker.answer` whichever path took it: this module's route, or
the peers' lane in front of the application (tracker.peer_lane), which answers most of them.

With a fleet token the tracker is private, as private BitTorrent trackers are: every announce and scrape
needs a passkey of the fleet (core.tickets), in the path or the query, since standard clients send no
headers of their own; one without gets a ``failure reason``. The seeder writes the passkey into the
torrents it serves to the fleet, and marks them private (BEP 27), so clients use no DHT or peer exchange
that would go around the tracker.

HTTP behaviour:

* Every reply of these routes is bencoded, ``text/plain`` (as opentracker answers), errors included: the
  :func:`bencoded_errors` middleware is the innermost one, so it answers for these paths before the
  tracker's JSON error middleware could.
* A request the tracker refuses (a missing or malformed field) gets ``200`` with a ``failure reason``.
  That is BEP 3's convention, and what clients act on: libtorrent and aria2c show the reason from a 200
  body, while on any other status they report a bare HTTP error and never read it.
* A method other than GET or HEAD gets 405 and an unexpected error 500, both bencoded too, since neither
  is a rejection of the announce the client can act on.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from urllib.parse import quote_from_bytes

import aiohttp
import msgspec
from aiohttp import web
from fastbencode import bdecode

from shoal.core.bt_admission import Admissions
from shoal.core.bt_tracker import (
    INFO_HASH_SIZE,
    BtAnnounce,
    BtPolicy,
    Swarms,
    SwarmStats,
    encode_failure,
    encode_scrape,
    normalize_address,
    parse_query,
    parse_scrape,
)
from shoal.core.errors import ProtocolError
from shoal.core.messages import SwarmAdmission
from shoal.core.ownership import TrackerMember
from shoal.core.tickets import PASSKEY_PARAM
from shoal.http.json_api import struct_response
from shoal.http.openapi import Query, Route
from shoal.tracker.admission import Admission
from shoal.tracker.cluster import Cluster, local_address
from shoal.tracker.config import TrackerConfig

log = logging.getLogger("shoal.tracker.bt")
PATHS = frozenset({"/announce", "/scrape"})
_KEYED = ("/announce/", "/scrape/")


def bt_path(path: str) -> str | None:
    """The BitTorrent route ``path`` is (``/announce`` or ``/scrape``), with or without a passkey; None for
    any other path."""
    if path in PATHS:
        return path
    return path.rpartition("/")[0] if path.startswith(_KEYED) else None


class BtTracker:
    """The BitTorrent side of the tracker: the swarms, the clock and the randomness of hand-outs."""

    def __init__(
        self, config: TrackerConfig, clock: Callable[[], float] = time.time, rng: random.Random | None = None
    ) -> None:
        self.policy = BtPolicy(
            interval=config.bt_interval,
            min_interval=config.bt_min_interval,
            peer_ttl=config.bt_peer_ttl,
            default_numwant=config.bt_numwant,
            max_numwant=config.bt_max_numwant,
            scrape_limit=config.bt_scrape_limit,
            accept_ip=config.bt_accept_ip,
        )
        self.swarms = Swarms(self.policy)
        self.clock = clock
        self.rng = rng or random.Random()
        self.fleet_key = config.fleet_key
        self.admissions = Admissions(config.bt_peer_ttl)
        """Hosts that announced a swarm with the fleet's passkey (a private tracker only): whom a wire seeder
        of the fleet serves (core.bt_admission)."""

    def admit(self, passkey: str | None) -> None:
        """Nothing on a tracker without a fleet token, or for a passkey of its fleet; else CredentialRefused
        (a ProtocolError: the client gets a ``failure reason``)."""
        if self.fleet_key is not None:
            self.fleet_key.check_passkey(passkey)

    def refused(self, passkey: str | None, raw_query: str) -> bytes | None:
        """The bencoded failure of a request without a passkey of the fleet, in its path (``passkey``) or in
        its query; None when it is admitted (any request, on a tracker without a fleet token)."""
        if self.fleet_key is None:
            return None
        try:
            self.fleet_key.check_passkey(passkey_in(passkey, raw_query))
        except ProtocolError as exc:
            return encode_failure(str(exc))
        return None

    def answer(self, passkey: str | None, raw_query: str, source: str | None, local: str | None) -> tuple[int, bytes]:
        """The status and bencoded body a ``GET /announce`` is answered, whichever path took it (the
        application's route, the peers' lane): its passkey checked (the one in its path, ``passkey``, else
        its query's), then :meth:`announce`. A request refused (a bad passkey or field) gets its ``failure
        reason`` in a 200, as BEP 3 has it (the module's HTTP behaviour); an unexpected error, a 500 (logged)."""
        try:
            if (refusal := self.refused(passkey, raw_query)) is not None:
                return 200, refusal
            return 200, self.announce(raw_query, source, local)
        except ProtocolError as exc:
            return 200, encode_failure(str(exc))
        except Exception:
            log.exception("unexpected error in an announce")
            return 500, encode_failure("internal error")

    def announce(self, raw_query: str, source: str | None, local: str | None) -> bytes:
        """The bencoded reply to an announce from ``source`` that reached us at ``local``."""
        request = BtAnnounce.from_query(raw_query)
        if source is None:
            raise ProtocolError("the tracker cannot tell the client's address")
        now = self.clock()
        address = normalize_address(source)
        reply = self.swarms.announce(
            request,
            source=address,
            tracker_address=None if local is None else normalize_address(local),
            now=now,
            rng=self.rng,
        )
        if self.fleet_key is not None:  # answer() took its passkey
            if request.event == "stopped":
                self.admissions.leave(request.info_hash, address)
            else:
                self.admissions.admit(request.info_hash, address, now)
        return reply.encode(compact=request.compact, no_peer_id=request.no_peer_id)

    def admission(self, info_hash: bytes, address: str) -> SwarmAdmission:
        """Whether the host at ``address`` announced ``info_hash`` with the fleet's passkey recently (any
        host, on a tracker without a fleet token: it admits everyone)."""
        if self.fleet_key is None:
            return SwarmAdmission(admitted=True)
        until = self.admissions.until(info_hash, normalize_address(address), self.clock())
        return SwarmAdmission(admitted=until is not None, until=until)

    def scrape(self, raw_query: str) -> bytes:
        return encode_scrape(self.swarms.scrape(parse_scrape(raw_query), self.clock()))

    def sweep(self) -> int:
        return self.swarms.sweep(self.clock())

    def held(self) -> list[str]:
        """The ownership keys (:func:`swarm_key`) of the swarms this tracker keeps."""
        return [swarm_key(info_hash) for info_hash in self.swarms.held()]

    def drop(self, keys: list[str]) -> None:
        """Forget the swarms among ``keys`` (ownership keys; others are ignored): another tracker owns them. A
        URL task's id has a swarm key's form, and the same key has the same owner, so the two move together."""
        self.swarms.forget(bytes.fromhex(key) for key in keys if _is_info_hash(key))


BT = web.AppKey("bt", BtTracker)
BT_CLUSTER: web.AppKey[Cluster | None] = web.AppKey("bt_cluster")
BT_SCRAPES: web.AppKey[Admission | None] = web.AppKey("bt_scrapes")


def _bencoded(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type="text/plain")


@web.middleware
async def bencoded_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Errors on the BitTorrent paths as bencoded failures, never JSON (see the module docstring)."""
    if bt_path(request.path) is None:
        return await handler(request)
    try:
        return await handler(request)
    except ProtocolError as exc:
        return _bencoded(encode_failure(str(exc)))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _bencoded(encode_failure(exc.reason), exc.status)
    except Exception:
        log.exception("unexpected error in %s %s", request.method, request.path)
        return _bencoded(encode_failure("internal error"), 500)


def passkey_in(passkey: str | None, raw_query: str) -> str | None:
    """The passkey an announce or scrape carries: ``passkey``, the one in its path, else its query's."""
    if passkey:
        return passkey
    values = parse_query(raw_query).get(PASSKEY_PARAM)
    return values[0].decode("latin-1") if values else None


def passkey_of(request: web.Request) -> str | None:
    """The passkey an announce or scrape carries, in its path or its query."""
    return passkey_in(request.match_info.get("passkey"), request.rel_url.raw_query_string)


def refusal(bt: BtTracker, request: web.Request) -> web.Response | None:
    """The bencoded failure a BitTorrent request without a passkey of the fleet gets (None: admitted), for
    a middleware outside :func:`bencoded_errors` (the cluster's, which checks before it forwards)."""
    refused = bt.refused(request.match_info.get("passkey"), request.rel_url.raw_query_string)
    return None if refused is None else _bencoded(refused)


async def announce(request: web.Request) -> web.Response:
    # In a cluster, the ownership check is the middleware's (tracker.app._owned_here, Cluster.forward), with no
    # re-check here as the JSON announce has (TrackerService.announce): none is needed while nothing between
    # the check and the decision awaits. Cluster.forward calls the handler chain at once; inside it only
    # bencoded_errors (the innermost middleware) and this handler run, and neither awaits before
    # BtTracker.answer, which decides in memory and writes nothing durable. So the check and the decision
    # run in one step of the event loop, at one reading of the member rows, with no heartbeat between them.
    # The peers' lane keeps the same rule (tracker.peer_lane). An await added on that way (a middleware
    # inside the cluster's, a look-up here) must bring the re-check.
    bt, cluster = request.app[BT], request.app[BT_CLUSTER]
    source, local = cluster.addresses(request) if cluster is not None else (request.remote, local_address(request))
    status, body = bt.answer(request.match_info.get("passkey"), request.rel_url.raw_query_string, source, local)
    return _bencoded(body, status)


ADMITTED_PATH = "/v1/swarms/{info_hash}/admitted"
"""The JSON route a wire seeder of the fleet asks (with the fleet's credential, like every /v1/ route)."""


def admitted_key(request: web.Request) -> str | None:
    """The ownership key of a request to ADMITTED_PATH (the info-hash in hex, as :func:`swarm_key`); None
    for any other route, or a malformed info-hash (the handler refuses it wherever it is)."""
    info_hash = request.match_info.get("info_hash", "")  # ADMITTED_PATH is the one route with it
    return info_hash if _is_info_hash(info_hash) else None


def _is_info_hash(text: str) -> bool:
    return len(text) == 2 * INFO_HASH_SIZE and all(c in "0123456789abcdef" for c in text)


async def admitted(request: web.Request) -> web.Response:
    """Whether the host at ``?address=`` may be served the swarm's pieces (core.bt_admission)."""
    info_hash = request.match_info["info_hash"]
    if not _is_info_hash(info_hash):
        raise ProtocolError("info_hash must be 40 lower-case hex characters", field="info_hash")
    address = request.query.get("address", "")
    reply = request.app[BT].admission(bytes.fromhex(info_hash), address)
    cluster = request.app[BT_CLUSTER]
    if cluster is not None and cluster.forwarded(request):
        # Another member forwarded the question: name ourselves so that the seeder's next questions about
        # this swarm come here directly (core.owner_hint), as a forwarded announce's reply does.
        reply = msgspec.structs.replace(reply, owner=cluster.url)
    return struct_response(reply)


async def scrape(request: web.Request) -> web.Response:
    bt, cluster = request.app[BT], request.app[BT_CLUSTER]
    bt.admit(passkey_of(request))
    query = request.rel_url.raw_query_string
    if cluster is None or cluster.forwarded(request):
        return _bencoded(bt.scrape(query))
    counts = await _gather_scrape(request, bt, cluster, parse_scrape(query), request.app[BT_SCRAPES])
    return _bencoded(encode_scrape(counts))


def swarm_key(info_hash: bytes) -> str:
    """The key a BitTorrent swarm is owned by in a cluster of trackers (core.ownership)."""
    return info_hash.hex()


def announce_key(raw_query: str) -> str | None:
    """The ownership key of a ``GET /announce``, None when its info_hash is missing or malformed (the
    handler refuses it wherever it is)."""
    values = parse_query(raw_query).get("info_hash", [])
    return swarm_key(values[0]) if len(values) == 1 and len(values[0]) == INFO_HASH_SIZE else None


async def _gather_scrape(
    request: web.Request,
    bt: BtTracker,
    cluster: Cluster,
    info_hashes: tuple[bytes, ...],
    slots: Admission | None = None,
) -> dict[bytes, SwarmStats]:
    """A scrape's counts from the members that own its swarms: ours from memory, the others' asked of them
    (one request per member, each holding one of ``slots`` until it is answered: tracker.admission). A member
    that does not answer, or that no slot is free to ask, leaves its swarms out, as a scrape leaves out a
    swarm it does not know; so does a scrape that names none (it gets this tracker's largest swarms)."""
    now = bt.clock()
    if not info_hashes:
        return bt.swarms.scrape((), now)
    by_owner: dict[str, list[bytes]] = {}
    members: dict[str, TrackerMember] = {}
    for info_hash in info_hashes:
        member = cluster.owner(swarm_key(info_hash))
        if member is not None:
            by_owner.setdefault(member.tracker_id, []).append(info_hash)
            members[member.tracker_id] = member
    mine = by_owner.pop(cluster.tracker_id, None)
    files = bt.swarms.scrape(mine, now) if mine else {}

    passkey = passkey_of(request)
    route = f"/scrape/{passkey}" if passkey else "/scrape"  # the owners check the client's passkey too

    async def ask(tracker_id: str, hashes: list[bytes]) -> dict[bytes, SwarmStats]:
        if slots is not None and not slots.enter():
            slots.warn()
            return {}
        path = f"{route}?" + "&".join("info_hash=" + quote_from_bytes(h, safe="") for h in hashes)
        try:
            status, body, _ = await cluster.ask(request, members[tracker_id], path)
            reply = bdecode(body) if status == 200 else None
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.info("scrape at %s failed: %s", members[tracker_id].url, exc)
            return {}
        finally:
            if slots is not None:
                slots.leave()
        return _scrape_counts(reply, set(hashes))

    for part in await asyncio.gather(*(ask(t, hashes) for t, hashes in by_owner.items())):
        files.update(part)
    return {h: files[h] for h in info_hashes if h in files}


def _scrape_counts(reply: object, asked: set[bytes]) -> dict[bytes, SwarmStats]:
    """The counts of a member's scrape reply, for the swarms we asked it about; what is malformed is left out."""
    files = reply.get(b"files") if isinstance(reply, dict) else None
    if not isinstance(files, dict):
        return {}
    out: dict[bytes, SwarmStats] = {}
    for info_hash, counts in files.items():
        if info_hash in asked and isinstance(counts, dict):
            values = [counts.get(k) for k in (b"complete", b"incomplete", b"downloaded")]
            if all(isinstance(v, int) and v >= 0 for v in values):
                out[info_hash] = SwarmStats(*values)  # type: ignore[arg-type]
    return out


def add_routes(
    app: web.Application, bt: BtTracker, cluster: Cluster | None = None, scrapes: Admission | None = None
) -> None:
    """Serve ``bt`` at /announce and /scrape, with its error middleware inside the app's others. In a
    ``cluster``, the app forwards an announce to its swarm's owner (``announce_key``), and a scrape gathers
    its counts from the swarms' owners, at most ``scrapes``' limit of requests at once (None: no cap)."""
    app[BT] = bt
    app[BT_CLUSTER] = cluster
    app[BT_SCRAPES] = scrapes
    app.middlewares.append(bencoded_errors)
    for route, handler in (("/announce", announce), ("/scrape", scrape)):
        app.router.add_get(route, handler)
        app.router.add_get(route + "/{passkey}", handler)
    app.router.add_get(ADMITTED_PATH, admitted)


ROUTES = (
    Route(
        "GET",
        ADMITTED_PATH,
        "whether the host at ?address=IP announced the BitTorrent swarm INFO_HASH (hex) with the fleet's passkey "
        "within the BitTorrent peer TTL: a wire seeder of the fleet serves that host then only. Any host, on a "
        "tracker without a fleet token",
        response=SwarmAdmission,
        query=(Query("address", "the host's IP address", str, required=True),),
    ),
)
"""The BitTorrent side's JSON route, for the tracker's OpenAPI document."""
