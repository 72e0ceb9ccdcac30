"""The peers' lane (shoal.http.lane): a peer's announce and its look-up of piece hashes, the two requests
every peer sends over and over, and a BitTorrent client's ``GET /announce``, answered without aiohttp's
per-request machinery.

They answer what tracker.app's and tracker.bt's routes answer, through the same calls: the fleet's
credential (a 401 before anything else; a BitTorrent announce's passkey, a bencoded failure), the cap on
announces in flight (a 503 with Retry-After before the body is decoded), the service's decision, the
store's hashes or the BitTorrent swarms' reply (BtTracker.answer), the errors (JSON: a ProtocolError's 4xx,
a 503 when the database fails; BitTorrent: a bencoded failure) and the announce metrics. In a cluster, the
lane serves a request about a task or a BitTorrent swarm as the application does (tracker.cluster): here
when this member decides it, else relayed to the member that does, a forwarded request from another
member's host judged by the peer it names. So a peer's connection stays in the lane whichever member
decides its tasks.

A BitTorrent announce decided here is decided in the step of the event loop that found this member its
swarm's owner, as tracker.bt.announce's comment requires: nothing awaits between Cluster.deciding and
BtTracker.answer, which run in one function that does not await (``bt_decided``); only an announce relayed
to its swarm's owner waits, after it.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

import msgspec

from shoal.core.errors import AnnounceRefused, CredentialRefused, ProtocolError, StoreError
from shoal.core.messages import AnnounceRequest
from shoal.core.ownership import TrackerMember
from shoal.core.structs import decode
from shoal.core.tickets import FLEET_HEADER
from shoal.http.fleet_auth import refusal
from shoal.http.json_api import ERROR_TYPE, error_body
from shoal.http.lane import Lane, LaneReply, LaneRequest, LaneRoute
from shoal.tracker.admission import Admission
from shoal.tracker.bt import announce_key
from shoal.tracker.cluster import FORWARDED_FOR, FORWARDED_TO, RETRY_AFTER, Outbound, Relayed, relayed_headers
from shoal.tracker.config import TrackerConfig
from shoal.tracker.metrics import AnnounceTimer
from shoal.tracker.service import TrackerService

log = logging.getLogger("shoal.tracker")

DATABASE = "the tracker's database"
"""What a 503 names when the store fails (as the application's JSON error middleware does)."""
_TASK = "([0-9a-f]{40}|[0-9a-f]{64})"
ANNOUNCE = re.compile(f"/v1/tasks/{_TASK}/announce")
HASHES = re.compile(f"/v1/tasks/{_TASK}/hashes(?:\\?since=(0|[1-9][0-9]{{0,17}}))?")
"""A hash look-up the lane takes: ``since`` absent or a plain whole number (anything else is the
application's, which answers a bad one 400)."""
BT_ANNOUNCE = re.compile(r"/announce(?:/([A-Za-z0-9._:-]+))?(?:\?([!-\"$-~]*))?")
"""A BitTorrent announce the lane takes: a passkey in the path of the characters passkeys are made of
(core.tickets; aiohttp's route would percent-decode one, and refuse a slash or a brace), and a query of
printable ASCII without a fragment (``#``, which aiohttp cuts off), passed on as the client encoded it."""
BENCODED = "text/plain"
"""The content type of every BitTorrent reply (tracker.bt)."""


def error(status: int, message: str, *headers: tuple[str, str]) -> LaneReply:
    """A JSON error, written as the application writes its own (shoal.http.json_api.json_error)."""
    return LaneReply(status, error_body(message), headers, ERROR_TYPE)


class PeerAnswers:
    """What a peer's announce and hash look-up are answered, past the checks made before their body is read
    (credential, cap, owner): one definition for the lane and the application's routes."""

    def __init__(self, service: TrackerService, admission: Admission) -> None:
        self.service = service
        self.admission = admission

    async def announce(self, task_id: str, body: bytes, seen: str, owner: str = "") -> LaneReply:
        """The announce of ``body`` from the host ``seen``; ``owner``: the URL to name as the task's owner (a
        member answering a request another forwarded)."""
        try:
            reply = await self.service.announce(task_id, decode(body, AnnounceRequest), seen)
        except AnnounceRefused as exc:
            return error(exc.status, str(exc), ("Retry-After", str(exc.retry_after)))
        except (ProtocolError, StoreError) as exc:
            return failed(exc)
        self.admission.longest_wait = self.service.longest_retry()
        if owner:
            reply = msgspec.structs.replace(reply, owner=owner)
        return LaneReply(200, msgspec.json.encode(reply))

    async def hashes(self, task_id: str, since: int) -> LaneReply:
        try:
            reply = await self.service.store.hashes_since(task_id, since)
        except StoreError as exc:
            return failed(exc)
        if reply is None:
            return error(404, f"unknown task {task_id}")
        return LaneReply(200, msgspec.json.encode(reply))


def relayed_reply(relayed: Relayed) -> LaneReply:
    """The owner's reply to a request this member forwarded, as the lane writes it."""
    headers = dict(relayed.headers)
    content_type = headers.pop("Content-Type", "application/json")
    return LaneReply(relayed.status, relayed.body, tuple(headers.items()), content_type)


def failed(exc: ProtocolError | StoreError) -> LaneReply:
    """A client's error as its 4xx; the database failing as a 503 (logged), as the application's JSON error
    middleware answers them."""
    if isinstance(exc, ProtocolError):
        return error(exc.http_status, str(exc))
    log.error("%s failed: %s", DATABASE, exc)
    return error(503, f"{DATABASE} is unavailable")


def peer_lane(
    answers: PeerAnswers,
    config: TrackerConfig,
    timer: AnnounceTimer | None,
    clock: Callable[[], float] = time.time,
) -> Lane:
    """The lane of a tracker giving ``answers`` behind their admission's cap, counting its announces with
    ``timer`` (None without metrics)."""
    admission = answers.admission
    cluster = answers.service.cluster
    fleet = config.fleet_key
    fleet_header = FLEET_HEADER.lower()
    forwarded_for = FORWARDED_FOR.lower()

    def stranger(headers: dict[str, str]) -> LaneReply | None:
        """The 401 of a request without a valid credential of the fleet; None when it has one, or when the
        tracker has no fleet key."""
        if fleet is None:
            return None
        try:
            fleet.check_credential(headers.get(fleet_header), clock())
        except CredentialRefused as exc:
            return LaneReply(401, refusal(exc), content_type=ERROR_TYPE)
        return None

    def forwarded(request: LaneRequest) -> bool:
        return cluster is not None and cluster.forwarded_by(request.remote, forwarded_for in request.headers)

    def addresses(request: LaneRequest) -> tuple[str | None, str | None]:
        """The client's address and the one it reached a tracker at (Cluster.seen: as a forwarding member
        saw them, for a request another member forwarded)."""
        remote, local = request.remote or None, request.local or None
        if cluster is None:
            return remote, local
        return cluster.seen(remote, local, lambda name: request.headers.get(name.lower()))

    def busy(again: str) -> LaneReply:
        wait, body = admission.busy_reply(again)
        return LaneReply(503, body, (("Retry-After", str(wait)),), ERROR_TYPE)

    def deciding(
        request: LaneRequest, again: str, key: str = "", what: str = "task"
    ) -> LaneReply | TrackerMember | None:
        """Where a request about a task (or ``key`` of ``what``: a BitTorrent swarm) is decided: None here,
        the member to relay it to, or the 503 of a request none can decide at the moment."""
        if cluster is None:
            return None
        to = cluster.deciding(key or request.groups[0], forwarded(request), what)
        if isinstance(to, str):
            return error(503, f"{to}; {again} again", ("Retry-After", RETRY_AFTER))
        return None if to.tracker_id == cluster.tracker_id else to

    async def elsewhere(request: LaneRequest, again: str, slots: Admission | None = None) -> LaneReply | None:
        """The reply of a request about a task another member decides, relayed to it holding one of ``slots``
        (as tracker.cluster's forward relays one), or that none can decide at the moment; None for a request
        decided here."""
        to = deciding(request, again)
        if to is None or isinstance(to, LaneReply):
            return to
        return await relay(request, to, again, slots)

    async def relay(
        request: LaneRequest, to: TrackerMember, again: str, slots: Admission | None, what: str = "task"
    ) -> LaneReply:
        """The reply of member ``to`` to a request this one relays there, holding one of ``slots`` until it
        answers; a 503 at once when none is free."""
        assert cluster is not None
        if slots is not None and not slots.enter():
            return busy(again)
        kept = relayed_headers(lambda name: request.headers.get(name.lower()))
        outbound = Outbound(request.method, request.target, kept, request.body, request.remote, request.local)
        try:
            relayed = await cluster.pass_on(outbound, to, what=what, again=again)
        finally:
            if slots is not None:
                slots.leave()
        return relayed_reply(relayed)

    class Slots:
        """The announce route's gate: the fleet's credential, then a slot of the cap, as the application's
        middlewares check them before an announce's body is read (an announce relayed to its owner holds its
        slot until the owner answers); counted by the metrics when refused."""

        def enter(self, groups: tuple[str, ...], headers: dict[str, str]) -> LaneReply | None:
            refused = stranger(headers)
            if refused is None:
                if admission.enter():
                    return None
                refused = busy("announce")
            if timer is not None:
                timer.record("json", 0.0, refused.status)
            return refused

        def leave(self) -> None:
            admission.leave()

        def left(self) -> None:
            admission.abandoned += 1
            log.debug("an announce's client left; the announce stops where it stands")

        def late(self, reply: LaneReply, seconds: float) -> None:
            """An announce whose body did not arrive in time: counted as the application's route counts the
            408 of read_body, and not as abandoned."""
            if timer is not None:
                timer.record("json", seconds, reply.status)
            admission.leave()

    async def announce(request: LaneRequest) -> LaneReply:
        started = time.perf_counter()
        answer = await elsewhere(request, "announce")
        if answer is None:
            seen, _ = addresses(request)
            # The peer asked another member, which forwarded: name ourselves so that its next announces of this
            # task come here directly (core.owner_hint).
            owner = cluster.url if cluster is not None and forwarded(request) else ""
            answer = await answers.announce(request.groups[0], request.body, seen or "", owner)
        if timer is not None:
            timer.record("json", time.perf_counter() - started, answer.status)
        return answer

    async def hashes(request: LaneRequest) -> LaneReply:
        if (refused := stranger(request.headers)) is not None:
            return refused
        if (answer := await elsewhere(request, "ask", admission)) is not None:
            return answer
        return await answers.hashes(request.groups[0], int(request.groups[1] or 0))

    bt = answers.service.bt

    def bt_decided(request: LaneRequest) -> LaneReply | TrackerMember:
        """The reply to a BitTorrent announce, as tracker.app's middlewares and tracker.bt's route answer it,
        or the member to relay it to: in a cluster, an announce naming a swarm is refused without a passkey
        of the fleet before it is relayed; one decided here, or that names no swarm, is BtTracker.answer's,
        in the step of the event loop that found the swarm this member's (see the module's docstring)."""
        passkey, raw_query = request.groups[0] or None, request.groups[1] or ""
        if cluster is not None and (key := announce_key(raw_query)) is not None:
            if (refused := bt.refused(passkey, raw_query)) is not None:
                return LaneReply(200, refused, content_type=BENCODED)
            to = deciding(request, "announce", key, "swarm")
            if to is not None:
                return to
        status, body = bt.answer(passkey, raw_query, *addresses(request))
        return LaneReply(status, body, content_type=BENCODED)

    async def bt_announce(request: LaneRequest) -> LaneReply:
        """A BitTorrent announce, decided here or relayed to its swarm's owner holding a slot of the cap until
        the owner answers (as the application's forward does)."""
        started = time.perf_counter()
        answer = bt_decided(request)
        if not isinstance(answer, LaneReply):
            answer = await relay(request, answer, "announce", admission, "swarm")
        if timer is not None:
            timer.record("bittorrent", time.perf_counter() - started, answer.status)
        return answer

    routes = (
        LaneRoute("POST", ANNOUNCE, announce, body=True, gate=Slots()),
        LaneRoute("GET", HASHES, hashes),
        LaneRoute("GET", BT_ANNOUNCE, bt_announce),
    )
    kept = {fleet_header, forwarded_for, FORWARDED_TO.lower(), "content-type"}
    return Lane(routes, config.max_body, headers=frozenset(kept))
