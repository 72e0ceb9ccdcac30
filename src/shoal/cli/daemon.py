"""``shoal daemon``: run the host's long-running peer and its cache."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import click

from shoal.cli.config_file import configured
from shoal.cli.fleet import FleetOptions, fleet_options
from shoal.cli.main import (
    TRACKERS,
    FiniteRange,
    click_parser,
    configure_logging,
    ignore_qp_option,
    locality_options,
    rate_option,
    run_or_exit,
    socket_option,
    verbose_option,
)
from shoal.cli.pool_tokens import pool_specs, pool_token_file_option
from shoal.core.errors import UsageError
from shoal.core.eviction import DEFAULT_CAPACITY
from shoal.core.units import format_bytes, format_size, parse_size
from shoal.daemon.config import DaemonConfig, default_cache_dir, default_socket
from shoal.peer.config import DEFAULT_LISTEN
from shoal.peer.request import parse_listen


def _capacity(text: str) -> int:
    size = parse_size(text)
    if size <= 0:
        raise UsageError(f"the capacity must be positive, not {text!r}")
    return size


async def run_daemon(config: DaemonConfig) -> None:
    from shoal.daemon.service import Daemon
    from shoal.http.listen import until_signalled
    from shoal.http.token_reload import reloading

    async with reloading(config.credentials), Daemon(config) as daemon:
        usage = daemon.store.usage()
        scheme = config.credentials.peer_scheme
        # The piece server's URL first: with port 0 this line is how a script learns it (see shoal.http.listen).
        await until_signalled(
            f"daemon listening on {scheme}://{config.listen_host}:{daemon.server.port} "
            f"(control socket {config.socket}; "
            f"cache {config.cache_dir}, {format_bytes(usage.used)} of {format_bytes(usage.capacity)}; "
            f"tracker {config.tracker or 'none'}" + "".join(f"; pool {spec.name}" for spec in config.pools) + ")"
        )


@configured("SHOAL_DAEMON")
@click.command()
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    metavar="DIR",
    help="Where the cache lives [default: $SHOAL_CACHE_DIR, /var/cache/shoal for root, else ~/.cache/shoal].",
)
@click.option(
    "--capacity",
    default=None,
    callback=click_parser(_capacity),
    metavar="SIZE",
    help="Bytes the cache may hold (1024-based K, M, G, T) [default: the cache's own, kept from its last "
    f"daemon; {format_size(DEFAULT_CAPACITY)} for a new cache].",
)
@click.option(
    "--tracker",
    envvar="SHOAL_TRACKER",
    callback=TRACKERS,
    metavar="URL[,URL...]",
    help="The tracker's base URL, or several of one cluster, asked in turn when one does not answer "
    "[default: $SHOAL_TRACKER; none: from the origins only].",
)
@locality_options
@click.option(
    "--listen",
    default=DEFAULT_LISTEN,
    show_default=True,
    callback=click_parser(parse_listen),
    metavar="HOST:PORT",
    help="Where the piece server serves other peers.",
)
@socket_option
@rate_option("--download-rate", "each download")
@rate_option("--upload-rate", "uploads to peers")
@click.option(
    "--scrub-interval",
    type=FiniteRange(min=0),
    default=DaemonConfig.scrub_interval,
    show_default=True,
    metavar="SECONDS",
    help="Seconds between full re-hashes of every cached file (0: never).",
)
@click.option(
    "--pool",
    "pools",
    multiple=True,
    metavar="NAME",
    help="Join this pool on the tracker and fetch what is pushed to it (repeatable); a private pool's token "
    "from --pool-token-file or $SHOAL_POOL_TOKEN (NAME:TOKEN works too, visible to every user in ps).",
)
@pool_token_file_option
@click.option(
    "--pool-dest",
    multiple=True,
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    metavar="DIR",
    help="A directory under which pushes may place files with --dest (repeatable) [default: none].",
)
@click.option(
    "--name",
    "member_name",
    default="",
    metavar="NAME",
    help="This daemon's name in its pools [default: the host name].",
)
@ignore_qp_option
@click.option(
    "--share-authenticated",
    is_flag=True,
    help="Share files fetched with origin headers with the peers that hold the same headers "
    "[default: such files come from the origin only and are served to nobody].",
)
@fleet_options(client=True)
@verbose_option
def daemon(
    cache_dir: Path | None,
    capacity: int | None,
    tracker: str | None,
    site: str,
    rack: str,
    listen: tuple[str, int],
    socket_path: Path | None,
    download_rate: int | None,
    upload_rate: int | None,
    scrub_interval: float,
    pools: tuple[str, ...],
    pool_token_file: str | None,
    pool_dest: tuple[Path, ...],
    member_name: str,
    ignore_qp: tuple[str, ...],
    share_authenticated: bool,
    fleet: FleetOptions,
    verbose: int,
) -> None:
    """Run the host's long-running peer: a bounded cache whose content it serves to the swarm for as long
    as it is cached. 'shoal get' hands its downloads to it."""
    configure_logging(verbose, False)
    if pools and tracker is None:
        raise click.BadParameter("pools live on a tracker: give --tracker too", param_hint="--pool")
    specs = run_or_exit(lambda: pool_specs(pools, pool_token_file))
    config = DaemonConfig(
        cache_dir=(cache_dir or default_cache_dir()).absolute(),
        capacity=capacity,
        tracker=tracker,
        site=site,
        rack=rack,
        listen_host=listen[0],
        listen_port=listen[1],
        socket=(socket_path or default_socket()).absolute(),
        download_rate=download_rate,
        upload_rate=upload_rate,
        scrub_interval=scrub_interval,
        pools=specs,
        pool_dest=tuple(p.absolute() for p in pool_dest),
        member_name=member_name,
        share_authenticated=share_authenticated,
        ignore_qp=ignore_qp,
    )

    def go() -> None:
        asyncio.run(run_daemon(replace(config, credentials=fleet.load())))

    run_or_exit(go)
