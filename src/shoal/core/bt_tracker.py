"""The BitTorrent HTTP tracker's decisions: announce (BEP 3, compact peers per BEP 23, IPv6 peers per BEP 7)
and scrape (BEP 48), from the raw query string to the bencoded reply, with no I/O.

Rules of this module:

* Queries are parsed from the raw query string. ``info_hash`` and ``peer_id`` are 20 arbitrary bytes,
  percent-encoded; a decoder that first turns the query into text (aiohttp's ``request.query``, yarl's
  ``query_string``) mangles them. A ``+`` is a literal plus (RFC 3986): treating it as a space is an HTML
  form convention, not part of the tracker protocol.
* Every field used is checked, and a bad one raises ProtocolError naming it; its message becomes the
  reply's ``failure reason``. Parameters the tracker does not use (trackerid, supportcrypto, ipv6, ...)
  are ignored, as BEP 3 asks of extensions.
* ``ip`` is honoured (when the policy says so) only if it is an IP address. A host name is refused with a
  failure reason rather than ignored: the tracker resolves no names (a lookup per announce, on behalf of
  anyone), and silently registering the client at another address than it asked for would hide its
  misconfiguration.
* Swarms live in memory, in one :class:`Swarms` owned by the service. BitTorrent clients re-announce every
  interval, so a restarted tracker knows every live peer again within one interval; storing them would
  cost a write per announce for state that is stale after one TTL (opentracker makes the same choice).
* A peer is its address (ip, port), the thing others connect to, as in opentracker: several clients on
  one host with different ports are distinct peers, and a client restarted under a new peer_id replaces
  its old entry instead of being handed out twice.
* A peer unheard of for ``peer_ttl`` is gone: skipped and dropped when its swarm is next read, and dropped
  by :meth:`Swarms.sweep`, which the service calls periodically for swarms nobody reads. ``stopped``
  drops the peer at once. ``completed`` from a peer not already known as a seed counts towards the
  swarm's ``downloaded`` (scrape), for as long as the swarm has peers.
* The asker never gets itself back, neither its address nor its peer_id (a client whose address changed
  leaves a stale entry under its own peer_id until it expires).
* Peers are picked at random, up to ``numwant`` (clamped to the policy's maximum). A seed asking gets
  leechers only: two seeds have nothing to exchange, so a seed in a seed's list wastes a connection slot on
  both sides. A leecher gets seeds and leechers alike.
* A peer stored at a loopback address announced from the tracker's own host. To an asker on another host
  it is reported at the address the asker used to reach the tracker (``tracker_address``), which is an
  address of that same host the asker can reach; that is what lets a seeder with an embedded tracker,
  announcing over 127.0.0.1, serve clients on the LAN. Without such an address it is left out for them.
* The interval in replies varies by +-10% (from the caller's rng), so a fleet started at once does not
  re-announce in lock step forever.
"""

from __future__ import annotations

import heapq
import ipaddress
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple
from urllib.parse import unquote_to_bytes

from fastbencode import bencode

from shoal.core.errors import ProtocolError

INFO_HASH_SIZE = 20
PEER_ID_SIZE = 20
EVENTS = ("", "started", "completed", "stopped", "paused")
"""``paused`` is BEP 21's (a partial seed that stays in the swarm); it is handled like a regular announce."""
INTERVAL_JITTER = 0.1
MAX_SCRAPE_HASHES = 256
"""Most info_hash parameters in one scrape (an HTTP request line holds about 130 anyway)."""
MAX_KEY_SIZE = 64
_MAX_COUNTER = 2**63 - 1
_MAX_DIGITS = 19

PeerKey = tuple[str, int]


@dataclass(frozen=True, slots=True)
class BtPolicy:
    """The tracker's BitTorrent settings (defaults and their reasons are in TrackerConfig)."""

    interval: int
    """Seconds between a client's announces, before jitter."""
    min_interval: int
    """Seconds a client must wait before announcing again of its own accord (BEP 3 ``min interval``)."""
    peer_ttl: float
    """A peer unheard of for this long is dropped."""
    default_numwant: int
    """Peers handed out when the client does not say how many it wants."""
    max_numwant: int
    """Most peers handed out in one reply, whatever the client asks."""
    scrape_limit: int
    """Most swarms in a scrape that names no info_hash."""
    accept_ip: bool
    """Register a client at the address its ``ip`` parameter gives instead of the one it connected from."""


@dataclass(frozen=True, slots=True)
class BtAnnounce:
    """One announce as the client sent it, every field checked."""

    info_hash: bytes
    peer_id: bytes
    port: int
    left: int
    uploaded: int = 0
    downloaded: int = 0
    event: str = ""
    ip: str | None = None
    """Normalised IP address the client asks to be reached at."""
    numwant: int | None = None
    """As asked (not yet clamped); None when the client did not say."""
    compact: bool = True
    no_peer_id: bool = False
    key: bytes | None = None
    """Accepted for BEP 3 compliance but unused: peers are identified by their address."""

    @classmethod
    def from_query(cls, raw_query: str) -> BtAnnounce:
        """Parse the raw (still percent-encoded) query string of ``GET /announce``."""
        query = parse_query(raw_query)
        info_hash = _fixed_bytes(query, "info_hash", INFO_HASH_SIZE)
        peer_id = _fixed_bytes(query, "peer_id", PEER_ID_SIZE)
        port = _number(query, "port", required=True)
        if not 0 < port < 65536:
            raise ProtocolError("port must be 1-65535", field="port")
        event = _first(query, "event", b"").decode("latin-1")
        if event not in EVENTS:
            raise ProtocolError(
                f"event must be one of started, completed, stopped or empty, not {event[:32]!r}", field="event"
            )
        raw_ip = query.get("ip")
        raw_key = query.get("key")
        if raw_key is not None and len(raw_key[0]) > MAX_KEY_SIZE:
            raise ProtocolError(f"key is longer than {MAX_KEY_SIZE} bytes", field="key")
        numwant = _number(query, "numwant") if "numwant" in query else None
        return cls(
            info_hash=info_hash,
            peer_id=peer_id,
            port=port,
            left=_number(query, "left", required=True),
            uploaded=_number(query, "uploaded"),
            downloaded=_number(query, "downloaded"),
            event=event,
            ip=None if raw_ip is None else normalize_address(raw_ip[0].decode("latin-1"), "ip"),
            numwant=numwant,
            compact=_flag(query, "compact", default=True),
            no_peer_id=_flag(query, "no_peer_id", default=False),
            key=None if raw_key is None else raw_key[0],
        )


def parse_scrape(raw_query: str) -> tuple[bytes, ...]:
    """The info_hashes a ``GET /scrape`` names (BEP 48), in order, without repeats; () asks for all."""
    hashes = parse_query(raw_query).get("info_hash", [])
    if len(hashes) > MAX_SCRAPE_HASHES:
        raise ProtocolError(f"a scrape names at most {MAX_SCRAPE_HASHES} info_hashes", field="info_hash")
    for value in hashes:
        if len(value) != INFO_HASH_SIZE:
            raise ProtocolError(f"info_hash must be {INFO_HASH_SIZE} bytes, got {len(value)}", field="info_hash")
    return tuple(dict.fromkeys(hashes))


def parse_query(raw_query: str) -> dict[str, list[bytes]]:
    """A raw query string as name -> percent-decoded values, in the order given."""
    out: dict[str, list[bytes]] = {}
    for item in raw_query.split("&"):
        if not item:
            continue
        name, _, value = item.partition("=")
        out.setdefault(unquote_to_bytes(name).decode("latin-1"), []).append(unquote_to_bytes(value))
    return out


def _first(query: dict[str, list[bytes]], name: str, default: bytes | None = None) -> bytes:
    values = query.get(name)
    if values is None:
        if default is None:
            raise ProtocolError(f"{name} is missing", field=name)
        return default
    return values[0]


def _fixed_bytes(query: dict[str, list[bytes]], name: str, size: int) -> bytes:
    value = _first(query, name)
    if len(value) != size:
        raise ProtocolError(f"{name} must be {size} bytes, got {len(value)}", field=name)
    return value


def _number(query: dict[str, list[bytes]], name: str, *, required: bool = False) -> int:
    raw = _first(query, name, None if required else b"0")
    # bytes.isdigit() is true for ASCII digits only: no sign, space, underscore or other scripts' digits.
    if not raw.isdigit():
        raise ProtocolError(f"{name} must be a non-negative integer", field=name)
    if len(raw) > _MAX_DIGITS or int(raw) > _MAX_COUNTER:
        raise ProtocolError(f"{name} is too large", field=name)
    return int(raw)


def _flag(query: dict[str, list[bytes]], name: str, *, default: bool) -> bool:
    raw = _first(query, name, b"1" if default else b"0")
    if raw not in (b"0", b"1"):
        raise ProtocolError(f"{name} must be 0 or 1", field=name)
    return raw == b"1"


@lru_cache(maxsize=4096)  # every announce normalises its source and the tracker's address: few distinct values
def normalize_address(text: str, name: str = "address") -> str:
    """An IP address in its canonical text form (IPv4-mapped IPv6 becomes IPv4); else ProtocolError."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ProtocolError(f"{name} must be an IP address (host names are not resolved)", field=name) from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_unspecified or address.is_multicast:
        raise ProtocolError(f"{name} must be a unicast address", field=name)
    return str(address)


@lru_cache(maxsize=4096)
def _is_loopback(ip: str) -> bool:
    # Cached: every announce asks this of its source and of the tracker's address, few distinct values.
    return ipaddress.ip_address(ip).is_loopback


def _compact(ip: str, port: int) -> bytes:
    """BEP 23 / BEP 7 compact form: the address (4 or 16 bytes) then the port, both in network order."""
    return ipaddress.ip_address(ip).packed + port.to_bytes(2, "big")


class HandedPeer(NamedTuple):
    """A peer as a reply names it (a named tuple: replies build dozens, and a frozen dataclass is several
    times slower to build; benchmarks/bt_announce.py)."""

    peer_id: bytes
    ip: str
    port: int
    packed: bytes
    """Compact form: 6 bytes for IPv4, 18 for IPv6."""


@dataclass(frozen=True, slots=True)
class AnnounceReply:
    interval: int
    min_interval: int
    complete: int
    """Seeds in the swarm (left == 0), the asker included."""
    incomplete: int
    """Leechers in the swarm, the asker included."""
    peers: tuple[HandedPeer, ...] = ()

    def encode(self, *, compact: bool = True, no_peer_id: bool = False) -> bytes:
        """The bencoded reply: compact ``peers`` (IPv4) and ``peers6`` (IPv6), or a list of dicts."""
        reply: dict[bytes, object] = {
            b"interval": self.interval,
            b"min interval": self.min_interval,
            b"complete": self.complete,
            b"incomplete": self.incomplete,
        }
        if compact:
            v4: list[bytes] = []
            v6: list[bytes] = []
            for peer in self.peers:
                (v4 if len(peer.packed) == 6 else v6).append(peer.packed)
            reply[b"peers"] = b"".join(v4)
            if v6:
                reply[b"peers6"] = b"".join(v6)
        else:
            reply[b"peers"] = [
                {b"ip": p.ip.encode(), b"port": p.port}
                if no_peer_id
                else {b"ip": p.ip.encode(), b"port": p.port, b"peer id": p.peer_id}
                for p in self.peers
            ]
        return _bencode(reply)


@dataclass(frozen=True, slots=True)
class SwarmStats:
    complete: int
    incomplete: int
    downloaded: int


def _bencode(value: object) -> bytes:
    # fastbencode's compiled bencode has no type stub: mypy sees Any.
    encoded: bytes = bencode(value)
    return encoded


def encode_scrape(files: dict[bytes, SwarmStats]) -> bytes:
    """BEP 48: ``files`` maps each info_hash to its counts."""
    return _bencode(
        {
            b"files": {
                info_hash: {b"complete": s.complete, b"incomplete": s.incomplete, b"downloaded": s.downloaded}
                for info_hash, s in files.items()
            }
        }
    )


def encode_failure(reason: str) -> bytes:
    """BEP 3: a reply holding only a human-readable ``failure reason``."""
    return _bencode({b"failure reason": reason.encode()})


@dataclass(slots=True)
class _Peer:
    peer_id: bytes
    port: int
    left: int
    last_seen: float
    loopback: bool
    packed: bytes


@dataclass(slots=True)
class _Swarm:
    peers: dict[PeerKey, _Peer] = field(default_factory=dict)
    downloaded: int = 0


class Swarms:
    """Every swarm the tracker knows: info_hash -> peers by address. The one owner of this state."""

    def __init__(self, policy: BtPolicy) -> None:
        self.policy = policy
        self._swarms: dict[bytes, _Swarm] = {}

    def __len__(self) -> int:
        return len(self._swarms)

    def peer_count(self) -> int:
        """Peers listed in every swarm (expired ones until the next :meth:`sweep`)."""
        return sum(len(swarm.peers) for swarm in self._swarms.values())

    def held(self) -> list[bytes]:
        """The info-hashes of the swarms kept."""
        return list(self._swarms)

    def forget(self, info_hashes: Iterable[bytes]) -> None:
        """Drop these swarms (another tracker decides them now): should they come back, they start empty
        rather than with peers that have since announced elsewhere."""
        for info_hash in info_hashes:
            self._swarms.pop(info_hash, None)

    def announce(
        self,
        request: BtAnnounce,
        *,
        source: str,
        tracker_address: str | None,
        now: float,
        rng: random.Random,
    ) -> AnnounceReply:
        """Record the announce and pick the peers to hand out.

        ``source`` is the normalised address the request came from, ``tracker_address`` the normalised
        address it reached the tracker at (see the module's loopback rule).
        """
        policy = self.policy
        ip = request.ip if request.ip is not None and policy.accept_ip else source
        me = (ip, request.port)
        swarm = self._swarms.get(request.info_hash)
        if swarm is None:
            if request.event == "stopped":
                return self._reply(0, 0, (), rng)
            swarm = self._swarms[request.info_hash] = _Swarm()
        _record(swarm, request, ip, now)

        # One pass: drop the expired, count, and gather who may be handed out. This costs O(swarm size) per
        # announce, which is fine at a fleet's announce rates (benchmarks/bt_announce.py; figures in
        # benchmarks/RESULTS.md).
        rewrite = not _is_loopback(source)
        host_address = None if tracker_address is None or _is_loopback(tracker_address) else tracker_address
        seeding = request.left == 0
        my_id = request.peer_id
        horizon = now - policy.peer_ttl
        complete = incomplete = 0
        candidates: list[tuple[PeerKey, _Peer]] = []
        expired: list[PeerKey] = []
        stood_in: set[tuple[str | None, int]] = set()
        for key, peer in swarm.peers.items():
            if peer.last_seen <= horizon:
                expired.append(key)
                continue
            if peer.left == 0:
                complete += 1
                if seeding:
                    continue
            else:
                incomplete += 1
            if key == me or peer.peer_id == my_id:
                continue
            if rewrite and peer.loopback:
                # Reported at host_address: not when that is the asker itself, or another entry of the swarm
                # (the same client announced over the LAN, or over both 127.0.0.1 and ::1).
                stand_in = (host_address, key[1])
                if host_address is None or stand_in == me or stand_in in swarm.peers or stand_in in stood_in:
                    continue
                stood_in.add(stand_in)
            candidates.append((key, peer))
        for key in expired:
            del swarm.peers[key]
        if request.event == "stopped":
            return self._reply(complete, incomplete, (), rng)

        wanted = policy.default_numwant if request.numwant is None else request.numwant
        chosen = rng.sample(candidates, min(wanted, policy.max_numwant, len(candidates)))
        handed = []
        for (peer_ip, port), peer in chosen:
            if rewrite and peer.loopback and host_address is not None:
                handed.append(HandedPeer(peer.peer_id, host_address, port, _compact(host_address, port)))
            else:
                handed.append(HandedPeer(peer.peer_id, peer_ip, port, peer.packed))
        return self._reply(complete, incomplete, tuple(handed), rng)

    def _reply(
        self, complete: int, incomplete: int, peers: tuple[HandedPeer, ...], rng: random.Random
    ) -> AnnounceReply:
        policy = self.policy
        jittered = round(policy.interval * rng.uniform(1 - INTERVAL_JITTER, 1 + INTERVAL_JITTER))
        return AnnounceReply(max(jittered, policy.min_interval, 1), policy.min_interval, complete, incomplete, peers)

    def scrape(self, info_hashes: Sequence[bytes], now: float) -> dict[bytes, SwarmStats]:
        """Counts of the named swarms (unknown ones are absent), or with none named, of the largest swarms,
        at most ``scrape_limit`` of them (a full scrape of a busy tracker would be megabytes)."""
        if info_hashes:
            return {h: self._stats(self._swarms[h], now) for h in info_hashes if h in self._swarms}
        every = ((h, self._stats(swarm, now)) for h, swarm in self._swarms.items())
        largest = heapq.nlargest(
            self.policy.scrape_limit, every, key=lambda item: item[1].complete + item[1].incomplete
        )
        return dict(largest)

    def _stats(self, swarm: _Swarm, now: float) -> SwarmStats:
        ttl = self.policy.peer_ttl
        live = [p for p in swarm.peers.values() if now - p.last_seen < ttl]
        seeds = sum(1 for p in live if p.left == 0)
        return SwarmStats(seeds, len(live) - seeds, swarm.downloaded)

    def sweep(self, now: float) -> int:
        """Drop every expired peer, and every swarm left without peers; return how many peers went."""
        ttl = self.policy.peer_ttl
        dropped = 0
        for info_hash, swarm in list(self._swarms.items()):
            expired = [key for key, peer in swarm.peers.items() if now - peer.last_seen >= ttl]
            for key in expired:
                del swarm.peers[key]
            dropped += len(expired)
            if not swarm.peers:
                del self._swarms[info_hash]
        return dropped


def _record(swarm: _Swarm, request: BtAnnounce, ip: str, now: float) -> None:
    """The swarm after the announce of the client at ``ip``: gone when it stopped, else (re)listed."""
    me = (ip, request.port)
    if request.event == "stopped":
        swarm.peers.pop(me, None)
        return
    previous = swarm.peers.get(me)
    if request.event == "completed" and (previous is None or previous.left > 0):
        swarm.downloaded += 1
    if previous is not None:
        previous.peer_id, previous.left, previous.last_seen = request.peer_id, request.left, now
    else:
        swarm.peers[me] = _Peer(
            request.peer_id, request.port, request.left, now, _is_loopback(ip), _compact(ip, request.port)
        )
