"""``shoal tracker``: run the tracker service.

The service (aiohttp, SQLAlchemy) is imported when it runs, so ``--help`` and usage errors cost no more
than click's own start-up.
"""

from __future__ import annotations

import re

import click

from shoal.cli.config_file import configured
from shoal.cli.fleet import FleetOptions, fleet_options
from shoal.cli.main import FiniteRange, configure_logging, run_or_exit, verbose_option
from shoal.core.balance import FLOOR, ROUND, Balancing
from shoal.core.bt_tracker import INTERVAL_JITTER
from shoal.tracker.config import TrackerConfig


@configured("SHOAL_TRACKER")
@click.command()
@click.option("--host", default=TrackerConfig.host, show_default=True, metavar="HOST", help="Address to listen on.")
@click.option(
    "--port",
    default=TrackerConfig.port,
    show_default=True,
    type=click.IntRange(0, 65535),
    metavar="PORT",
    help="Port to listen on (0: any free port).",
)
@click.option(
    "--db",
    metavar="URL",
    help="Database URL: sqlite:///PATH, postgresql://USER@HOST/DB or mysql://USER@HOST/DB; one with a password "
    f"belongs in $SHOAL_TRACKER_DB or --db-file, not in ps [default: {TrackerConfig.db}].",
)
@click.option(
    "--db-file",
    type=click.Path(dir_okay=False),
    metavar="PATH",
    help="Read the database URL from PATH (mode 0600), for a URL with a password.",
)
@click.option(
    "--interval",
    default=TrackerConfig.interval,
    show_default=True,
    metavar="SECONDS",
    type=FiniteRange(0.1, 3600),
    help="Seconds between the periodic announces of a peer of a busy swarm (one with a downloader).",
)
@click.option(
    "--idle-interval",
    type=FiniteRange(0.1, 86400),
    metavar="SECONDS",
    help="Seconds between the announces of a seed of a task nobody downloads "
    f"[default: {TrackerConfig.idle_interval:g}, or --interval if longer].",
)
@click.option(
    "--max-interval",
    type=FiniteRange(0.1, 86400),
    metavar="SECONDS",
    help=f"Longest interval load may stretch any to [default: {TrackerConfig.max_interval:g}, or --idle-interval "
    "if longer].",
)
@click.option(
    "--announce-rate",
    default=TrackerConfig.announce_rate,
    show_default=True,
    type=FiniteRange(0, 1e7),
    metavar="PER_SECOND",
    help="Announces a second the intervals handed out may imply; past it every interval is stretched (0: never).",
)
@click.option(
    "--peer-ttl",
    default=TrackerConfig.peer_ttl,
    show_default=True,
    metavar="SECONDS",
    type=FiniteRange(0.5, 86400),
    help="Seconds of silence after which a peer told --interval, and its origin leases, are dropped; a "
    "peer told a longer interval lives longer in proportion. More than --interval.",
)
@click.option(
    "--bt-interval",
    default=TrackerConfig.bt_interval,
    show_default=True,
    metavar="SECONDS",
    type=click.IntRange(1, 86400),
    help="Seconds between a BitTorrent client's announces (+-10% jitter).",
)
@click.option(
    "--bt-peer-ttl",
    default=TrackerConfig.bt_peer_ttl,
    show_default=True,
    metavar="SECONDS",
    type=FiniteRange(1, 7 * 86400),
    help="Seconds of silence after which a BitTorrent peer is dropped; more than --bt-interval.",
)
@click.option(
    "--audit-share",
    default=TrackerConfig.audit_share,
    show_default=True,
    type=FiniteRange(0, 1),
    metavar="SHARE",
    help="Share of the piece hashes lease holders report that another host fetches again from the origin "
    "to check (0: no spot checks).",
)
@click.option(
    "--crossing-patience",
    default=TrackerConfig.crossing_patience,
    show_default=True,
    type=FiniteRange(0.5, 3600),
    metavar="SECONDS",
    help="Seconds a rack's scope lease (one peer of the rack fetching a piece from another rack or site) may "
    "go undelivered before another peer of the rack takes it over.",
)
@click.option(
    "--origin-checks/--no-origin-checks",
    default=TrackerConfig.origin_checks,
    show_default=True,
    help="Confirm a peer's claim that an origin file changed with the tracker's own look at the origin; "
    "off (or the origin out of the tracker's reach), such a claim needs peers on two hosts.",
)
@click.option(
    "--max-inflight",
    default=TrackerConfig.max_inflight,
    show_default=True,
    type=click.IntRange(1, 1_000_000),
    metavar="N",
    help="Most JSON announces in flight, with the requests forwarded to other trackers of the cluster but "
    "pools' long-polls; past it one is answered 503 with Retry-After at once.",
)
@click.option(
    "--max-relayed-polls",
    default=TrackerConfig.max_relayed_polls,
    show_default=True,
    type=click.IntRange(1, 1_000_000),
    metavar="N",
    help="Most pool long-polls forwarded to other trackers of the cluster at once; past it one is answered "
    "503 with Retry-After.",
)
@click.option(
    "--max-relayed-scrapes",
    default=TrackerConfig.max_relayed_scrapes,
    show_default=True,
    type=click.IntRange(1, 1_000_000),
    metavar="N",
    help="Most requests sent at once to other trackers of the cluster to gather BitTorrent scrapes' counts; "
    "past it a scrape leaves out the swarms it would have asked about.",
)
@click.option(
    "--task-retention",
    default="7d",
    show_default=True,
    metavar="DURATION",
    callback=lambda ctx, param, value: _retention(value),
    help="Remove a task (its manifest and piece hashes) this long after its last peer: seconds, or with s, m, "
    "h or d (0: keep tasks forever).",
)
@click.option(
    "--max-peers-per-task",
    default=TrackerConfig.max_peers_per_task,
    show_default=True,
    type=click.IntRange(0, 10_000_000),
    metavar="N",
    help="Most live peers in one task; a new peer past it is answered 503 with Retry-After (0: no cap).",
)
@click.option(
    "--max-new-peers-per-source",
    default=TrackerConfig.max_new_peers_per_source,
    show_default=True,
    type=click.IntRange(0, 10_000_000),
    metavar="N",
    help="New peers one source address (an IPv6 /64) may add a minute; past it a 429 with Retry-After (0: no limit).",
)
@click.option(
    "--advertise",
    default="",
    metavar="URL",
    help="With several trackers on one PostgreSQL or MySQL database: the URL the others reach this one at "
    "(default: http://HOST:PORT as it listens, 127.0.0.1 for a wildcard HOST).",
)
@click.option(
    "--balance/--no-balance",
    "gives",
    default=True,
    show_default=True,
    help="With several trackers on one database: when this tracker decides more requests a second than the "
    "members' mean, it places busy tasks on the least loaded member (--no-balance: it keeps its own).",
)
@click.option(
    "--balance-floor",
    default=FLOOR,
    show_default=True,
    type=FiniteRange(0, min_open=True),
    metavar="N",
    help="Requests a second above the members' mean (and 10% of it) before this tracker gives tasks away.",
)
@click.option(
    "--balance-round",
    default=ROUND,
    show_default=True,
    type=FiniteRange(1, 3600),
    metavar="SECONDS",
    help="Seconds between balancing rounds: the window each tracker's load is measured over.",
)
@click.option(
    "--admin-token-file",
    type=click.Path(dir_okay=False),
    metavar="PATH",
    help="The operator's token (a file of mode 0600): creating pools needs it, and it manages every pool. "
    "Without it anyone may create pools (trusted networks only).",
)
@click.option(
    "--metrics/--no-metrics",
    default=TrackerConfig.metrics,
    show_default=True,
    help="Serve Prometheus metrics at /metrics (no token needed), counting and timing every announce for them.",
)
@click.option(
    "--access-log",
    is_flag=True,
    help="Log one line per request (aiohttp's access log: address, request line, status, size) in the log's "
    "format (--log-format, --log-file), whatever -v says.",
)
@click.option(
    "--public-dashboard",
    is_flag=True,
    help="With --fleet-token-file: the read-only dashboard (/ and its snapshots) is readable without the "
    "fleet's credential. Without a fleet token the API, and the page, are open anyway.",
)
@click.option(
    "--event-loop",
    type=click.Choice(["auto", "uvloop", "asyncio"]),
    default="asyncio",
    show_default=True,
    help="The event loop: uvloop (installed with shoal[tracker]) answers more announces per CPU second, but "
    "recovers worse from running out of file descriptors; auto takes it when installed.",
)
@fleet_options(client=True)
@verbose_option
def tracker(
    host: str,
    port: int,
    db: str | None,
    db_file: str | None,
    interval: float,
    idle_interval: float | None,
    max_interval: float | None,
    announce_rate: float,
    peer_ttl: float,
    bt_interval: int,
    bt_peer_ttl: float,
    audit_share: float,
    crossing_patience: float,
    origin_checks: bool,
    max_inflight: int,
    max_relayed_polls: int,
    max_relayed_scrapes: int,
    task_retention: float,
    max_peers_per_task: int,
    max_new_peers_per_source: int,
    advertise: str,
    gives: bool,
    balance_floor: float,
    balance_round: float,
    admin_token_file: str | None,
    metrics: bool,
    access_log: bool,
    public_dashboard: bool,
    event_loop: str,
    fleet: FleetOptions,
    verbose: int,
) -> None:
    """Run the tracker: tasks, peers, piece hashes and origin leases over a JSON API, and a BitTorrent
    tracker (/announce, /scrape) for standard clients."""
    configure_logging(verbose, False)
    # A client may announce INTERVAL_JITTER later than the interval; a TTL below that drops live peers.
    latest = bt_interval * (1 + INTERVAL_JITTER)
    if bt_peer_ttl <= latest:
        raise click.BadParameter(f"must exceed the latest re-announce, {latest:g} s", param_hint="--bt-peer-ttl")
    if peer_ttl <= interval:
        raise click.BadParameter(f"must exceed --interval ({interval:g} s)", param_hint="--peer-ttl")
    idle = max(TrackerConfig.idle_interval, interval) if idle_interval is None else idle_interval
    if idle < interval:
        raise click.BadParameter(f"must be at least --interval ({interval:g} s)", param_hint="--idle-interval")
    longest = max(TrackerConfig.max_interval, idle) if max_interval is None else max_interval
    if longest < idle:
        raise click.BadParameter(f"must be at least the idle interval ({idle:g} s)", param_hint="--max-interval")
    if db is not None and db_file is not None:
        raise click.UsageError("give --db or --db-file, not both")
    if advertise and not re.fullmatch(r"https?://[^/\s?#]+/?", advertise):
        raise click.BadParameter("must be a base URL: http://HOST:PORT", param_hint="--advertise")
    admin_token_hash = None
    if admin_token_file is not None:
        from shoal.core.pool import hash_token
        from shoal.storage.secret_file import read_secret_file

        admin_token_hash = hash_token(run_or_exit(lambda: read_secret_file(admin_token_file)))
    config = TrackerConfig(
        host=host,
        port=port,
        db=db or TrackerConfig.db,
        interval=interval,
        idle_interval=idle,
        max_interval=longest,
        announce_rate=announce_rate,
        peer_ttl=peer_ttl,
        bt_interval=bt_interval,
        bt_min_interval=min(TrackerConfig.bt_min_interval, bt_interval),
        bt_peer_ttl=bt_peer_ttl,
        audit_share=audit_share,
        crossing_patience=crossing_patience,
        origin_checks=origin_checks,
        max_inflight=max_inflight,
        max_relayed_polls=max_relayed_polls,
        max_relayed_scrapes=max_relayed_scrapes,
        task_retention=task_retention,
        max_peers_per_task=max_peers_per_task,
        max_new_peers_per_source=max_new_peers_per_source,
        advertise=advertise,
        balancing=Balancing(gives=gives, floor=balance_floor, round=balance_round),
        admin_token_hash=admin_token_hash,
        metrics=metrics,
        public_dashboard=public_dashboard,
    )

    def go() -> None:
        import logging
        from dataclasses import replace

        from shoal.http import event_loop as loops
        from shoal.http.credentials import warn_if_open
        from shoal.http.listen import ON_LISTENING, access_log_options, serve
        from shoal.http.token_reload import reloading
        from shoal.storage.db import async_url, safe_url
        from shoal.storage.secret_file import read_private_text
        from shoal.tracker.app import RUNNER_OPTIONS, build_app

        loop = loops.choose(event_loop, uvloop_available=loops.uvloop_installed())
        url = config.db if db_file is None else read_private_text(db_file)
        async_url(url)  # a malformed URL, or one without its driver, is a usage error before anything starts
        credentials = fleet.load()
        detail = f" (database {safe_url(url)}, event loop {loop})"
        app = build_app(
            replace(
                config,
                db=url,
                fleet_key=credentials.key,
                serves_tls=credentials.server_ssl is not None,
                forward_tls=credentials.client_ssl,
            )
        )

        def listening(port: int) -> None:  # once it serves: a tracker that cannot start says only why
            reach = "announce, learn every task's peers and piece hashes, and join any task's swarm"
            log = logging.getLogger("shoal.tracker")
            warn_if_open(log, "tracker and peer", f"{host}:{port}", credentials.secured, reach)

        app.setdefault(ON_LISTENING, []).append(listening)
        options = {**RUNNER_OPTIONS, **(access_log_options() if access_log else {})}

        async def main() -> None:
            async with reloading(credentials):
                await serve(app, host, port, "tracker", detail, tls=credentials.server_ssl, **options)

        loops.run(main(), loop)

    run_or_exit(go)


def _retention(value: str) -> float:
    """``--task-retention``: a duration (core.mirror_config's syntax), or 0 for forever."""
    from shoal.core.mirror_values import parse_duration

    if value.strip() in ("0", "0s", "0m", "0h", "0d"):
        return 0.0
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--task-retention") from None
