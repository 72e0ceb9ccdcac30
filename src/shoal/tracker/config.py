"""The tracker's configuration: every field documented, every default here."""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from shoal.core import balance
from shoal.core.audit import AUDIT_SHARE
from shoal.core.balance import Balancing
from shoal.core.tickets import FleetKey


# No slots: the class attributes must stay readable as the defaults (the CLI shows them).
@dataclass(frozen=True)
class TrackerConfig:
    host: str = "0.0.0.0"
    """Address to listen on."""
    port: int = 6969
    """TCP port to listen on; 0 picks a free one."""
    db: str = "sqlite:///shoal-tracker.db"
    """Database URL: sqlite:///path, postgresql://user@host/db or mysql://user@host/db."""
    interval: float = 5.0
    """Seconds between the periodic announces of a peer of a busy swarm, one with a downloader or an origin
    lease out (peers announce sooner when they need leases or have pieces to report). Core.interval."""
    idle_interval: float = 60.0
    """Seconds between the announces of a seed of a task nobody downloads: it has nothing to say, and a
    fleet's idle caches are most of its announces. At least ``interval``."""
    max_interval: float = 300.0
    """No interval is stretched past this by load (``announce_rate``). At least ``idle_interval``."""
    announce_rate: float = 500.0
    """Announces a second the intervals handed out may imply at most: past it every interval is stretched by
    one factor (core.interval). On this kind of machine a tracker answered 500 a second at a p99 of about
    3 ms on SQLite and PostgreSQL, and saturated at 700-1,250 (README, performance). 0: no stretching."""
    peer_ttl: float = 15.0
    """A peer told ``interval`` and unheard of for this long is dropped from hand-outs and its origin leases
    lapse; a peer told a longer interval lives longer in proportion (a seed told 60 s: 180 s)."""
    max_peers: int = 50
    """Most peers in one hand-out."""
    audit_share: float = AUDIT_SHARE
    """The share of the piece hashes lease holders report that another host fetches again from the origin to
    check (core.audit): the origin sends about this much more, and a holder lying about k pieces goes
    unnoticed with probability (1 - audit_share) ** k. 0 turns spot checks off."""
    crossing_patience: float = 10.0
    """Seconds a rack's (or site's) scope lease may go without its piece arriving before the next peer of the
    rack that asks takes it over (core.scope_leases): a stalled fetcher does not hold its rack up for long,
    and a fetch that takes longer than this may bring the piece into the rack twice."""
    origin_checks: bool = True
    """Check an announce's claim that a task's origin file changed with a look of the tracker's own at the
    origin (one small GET, at most one every 2 s per URL) before starting a new generation. Off, or when
    the tracker cannot reach the origin, such a claim needs peers on two hosts making it."""
    advertise: str = ""
    """With several trackers on one PostgreSQL or MySQL database: the URL the other trackers reach this one at
    to forward a task's requests to it (tracker.cluster). Empty: http://HOST:PORT as it listens, with
    127.0.0.1 for a wildcard HOST (trackers on one host)."""
    admin_token_hash: str | None = None
    """The SHA-256 of the operator's token (``--admin-token-file``): creating a pool needs it, and it manages
    every pool (tracker.pool_routes). None: anyone may create pools, which suits only a trusted network."""
    task_retention: float = 7 * 86400.0
    """Seconds a task is kept after its last peer (its manifest and piece hashes, in the database): one
    announced again later is read back, one gone is made afresh (its pieces hashed again from the origin).
    Tasks that a seeder or any peer still announces are kept. 0: forever."""
    max_peers_per_task: int = 10_000
    """Most live peers in one task's swarm; a new peer past it is answered 503 with ``Retry-After``
    (core.peer_limits). Peers already in the swarm are never refused. 0: no cap."""
    max_new_peers_per_source: int = 1_000
    """New peers (ones a task's swarm does not hold yet) a source address may add a minute, in bursts of as
    many; past it a 429 with ``Retry-After`` (core.peer_limits). 0: no limit."""
    fleet_key: FleetKey | None = None
    """The fleet token's keys: with them, every JSON API request but health needs a request credential (a
    401 without), and each announce reply carries the peer's ticket for the task (core.tickets). None: the
    API is open to whoever reaches it (a warning at start)."""
    metrics: bool = True
    """Serve ``GET /metrics`` (Prometheus) and count and time announces for it (tracker.metrics). Off, the
    tracker keeps no figure beyond what its decisions need."""
    public_dashboard: bool = False
    """With ``fleet_key``: the dashboard (``/`` and its snapshots, read-only) is readable without the fleet's
    credential, which browsers do not hold. Without a fleet key the whole API, the page with it, is open."""
    serves_tls: bool = False
    """The tracker serves https (``--tls-cert``): the scheme of the URL it advertises to the other members
    when ``advertise`` names none."""
    forward_tls: ssl.SSLContext | None = None
    """How this tracker reaches the other trackers of its cluster over https (tracker.cluster): the fleet's
    CA (``--ca``) and, for mutual TLS, its own certificate. None: aiohttp's defaults (the system's CAs)."""
    balancing: Balancing = balance.DEFAULT
    """With several trackers on one database: how this one gives tasks to the least loaded when its load is
    above the mean (core.balance)."""
    max_body: int = 256 * 1024
    """Largest request body accepted, in bytes; larger ones get a 413."""
    max_inflight: int = 64
    """Most JSON announces in flight at once; past it an announce is answered 503 with ``Retry-After`` at
    once, before its body is read (tracker.admission). Announces in flight share one core: with a few
    dozen, group commits fill and each waits about a few dozen announces' CPU time; hundreds would only
    queue, each waiting longer than the last. Requests this tracker forwards to another tracker of its
    cluster count too, but for pools' long-polls (``max_relayed_polls``). At least 1."""
    max_relayed_polls: int = 32
    """Most pool long-polls (heartbeats with ``wait``) this tracker relays to the pools' owners at once; past
    it one is answered 503 with ``Retry-After`` (tracker.admission). A relay holds one of the connections
    of the cluster's client session, which has one for each request the three caps let through at once
    (``max_inflight`` + ``max_relayed_polls`` + ``max_relayed_scrapes``), so no forward waits for one.
    At least 1."""
    max_relayed_scrapes: int = 4
    """Most requests this tracker sends at once to other trackers of its cluster to gather a BitTorrent scrape's
    counts (one per member owning some of the scrape's swarms; tracker.bt). Past it a scrape leaves out the
    swarms it would have asked about, as a scrape leaves out swarms the tracker does not know: neither takes
    a slot of ``max_inflight``, so a flood of scrapes never keeps announces out. At least 1."""

    # BitTorrent endpoints (GET /announce, GET /scrape) for standard clients; their peers live in memory.
    bt_interval: int = 60
    """Seconds between a BitTorrent client's announces (replies vary it by +-10%). Public trackers say 30
    minutes to spare themselves load; on a fleet's LAN a newcomer should find the hosts that joined since
    its last announce within a minute, and 10,000 hosts at 60 s are about 170 announces a second."""
    bt_min_interval: int = 15
    """Seconds a client must wait before announcing again of its own accord (BEP 3 ``min interval``): short
    enough that a client with no peers yet can ask again soon, long enough to stop a client in a loop."""
    bt_peer_ttl: float = 180.0
    """A BitTorrent peer unheard of for this long is dropped: three intervals, so two lost announces in a
    row (a busy host, a dropped packet) do not make a live peer vanish from the swarm."""
    bt_numwant: int = 50
    """Peers handed out when a client does not say how many it wants (the usual client default)."""
    bt_max_numwant: int = 200
    """Most peers in one reply whatever a client asks: libtorrent asks for 200; larger lists only make the
    reply bigger, a client connects to a few dozen peers anyway."""
    bt_scrape_limit: int = 1000
    """Most swarms in a scrape that names no info_hash (the largest ones): about 70 KB of reply."""
    bt_accept_ip: bool = True
    """Register a client at the address its ``ip`` parameter names instead of the one it connected from. On
    a fleet's network that lets a multi-homed host announce its data address; on an untrusted network turn
    it off, since it lets anyone list an arbitrary address in a swarm."""
