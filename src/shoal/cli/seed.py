"""``shoal seed DIR...``: publish watched directories to the swarm, as .torrent files and over BitTorrent.

This is the composition root of a seeder process: the seeder service, its HTTP routes, the BitTorrent wire
seeder, the registrar, and, unless ``--tracker`` names one elsewhere, a tracker on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import click

from shoal.cli.config_file import configured
from shoal.cli.fleet import FleetOptions, fleet_options
from shoal.cli.main import TRACKERS, configure_logging, run_or_exit, verbose_option
from shoal.core.errors import UsageError
from shoal.seeder.config import SeederConfig

if TYPE_CHECKING:
    import aiohttp
    from aiohttp import web

    from shoal.seeder.wire import WireAdmission
    from shoal.tracker.bt import BtTracker

# The services (aiohttp, SQLAlchemy, the seeder) are imported where they start, so `shoal seed --help` and
# usage errors cost no more than click's own start-up.


def _announce_ip(config: SeederConfig) -> str:
    """The address to give the BitTorrent tracker for our wire port, when we know a specific one."""
    for candidate in (urlsplit(config.advertise).hostname if config.advertise else None, config.host):
        try:
            address = ipaddress.ip_address(candidate or "")
        except ValueError:
            continue
        if not address.is_unspecified:
            return str(address)
    return ""


async def run_seeder(config: SeederConfig) -> None:
    from shoal.http.listen import until_signalled
    from shoal.http.token_reload import reloading

    async with reloading(config.credentials), hosted_seeder(config) as (port, bt_port):
        where = config.tracker or "embedded"
        scheme = config.credentials.peer_scheme
        await until_signalled(
            f"seeder listening on {scheme}://{config.host}:{port} (BitTorrent wire on port {bt_port}; tracker {where})"
        )


@contextlib.asynccontextmanager
async def hosted_seeder(config: SeederConfig) -> AsyncIterator[tuple[int, int]]:
    """A seeder (with its embedded tracker unless ``config.tracker`` is set) serving while the block runs;
    yields its HTTP port and BitTorrent wire port. ``shoal mirror worker`` hosts one this way too."""
    import aiohttp
    from aiohttp import web

    from shoal.http.fleet_auth import require_fleet
    from shoal.http.listen import listen
    from shoal.seeder.app import install
    from shoal.seeder.catalog import Catalog
    from shoal.seeder.registrar import Registrar
    from shoal.seeder.service import Seeder
    from shoal.seeder.wire import WireSeeder
    from shoal.storage.hash_index import HashIndex
    from shoal.tracker import TrackerConfig, build_app
    from shoal.tracker.app import RUNNER_OPTIONS

    credentials = config.credentials
    catalog = Catalog()
    with HashIndex(config.state_dir / "hashes.db") as index:
        seeder = Seeder(config, index, catalog)
        options: dict[str, Any] = {}
        if config.tracker:
            # Its JSON routes need the fleet's credential, as the embedded tracker's would (/v1/files names
            # the private torrents' info-hashes).
            fleet = [require_fleet(credentials.key)] if credentials.key is not None else []
            app = web.Application(middlewares=fleet)
        else:
            tracker_db = f"sqlite:///{config.state_dir / 'tracker.db'}"
            tracker_config = TrackerConfig(host=config.host, port=config.port, db=tracker_db)
            app = build_app(replace(tracker_config, fleet_key=credentials.key))
            options = dict(RUNNER_OPTIONS)
        async with aiohttp.ClientSession() as session:
            wire = WireSeeder(catalog, admission=_admission(app, config, session))
            install(app, seeder, config.tracker or "", wire)
            runner, port = await listen(app, config.host, config.port, tls=credentials.server_ssl, **options)
            try:
                bt_port = await wire.start(config.host, config.bt_port)
                local_host = "127.0.0.1" if config.host in ("0.0.0.0", "::", "") else config.host
                local = f"{credentials.peer_scheme}://{local_host}:{port}"
                # The embedded tracker is this process: its certificate need not name the loopback address
                # the registrar reaches it at, only be the fleet's (as a peer's, shoal.http.credentials).
                to_tracker = credentials if config.tracker else replace(credentials, client_ssl=credentials.peer_ssl)
                registrar = Registrar(
                    session,
                    config.tracker or local,
                    bt_port=bt_port,
                    file_url=f"{(config.advertise or local).rstrip('/')}/files",
                    announce_interval=config.announce_interval,
                    ip=_announce_ip(config),
                    credentials=to_tracker,
                )
                seeder.listeners.append(registrar)
                try:
                    await seeder.start()
                    yield port, bt_port
                finally:
                    await seeder.stop()
                    await registrar.close()
            finally:
                await wire.stop()
                await runner.cleanup()


class _EmbeddedAdmission:
    """The wire seeder's ``WireAdmission`` from the tracker in this process: its BitTorrent side's admissions."""

    def __init__(self, bt: BtTracker) -> None:
        self.bt = bt

    async def admits(self, info_hash: bytes, address: str) -> bool:
        return self.bt.admission(info_hash, address).admitted


def _admission(app: web.Application, config: SeederConfig, session: aiohttp.ClientSession) -> WireAdmission | None:
    """Whom the wire seeder serves: with a fleet token (private torrents), the hosts the fleet's tracker
    admitted to each swarm (asked in process of an embedded tracker, over its JSON route of one elsewhere:
    seeder.admission); without, everyone (None)."""
    from shoal.peer.tracker_client import TrackerClient
    from shoal.seeder.admission import TrackerAdmission
    from shoal.tracker.app import SERVICE

    credentials = config.credentials
    if credentials.key is None:
        return None
    if config.tracker:
        return TrackerAdmission(TrackerClient(config.tracker, session, credentials=credentials))
    return _EmbeddedAdmission(app[SERVICE].bt)


@configured("SHOAL_SEED")
@click.command()
@click.argument(
    "dirs", nargs=-1, required=True, metavar="DIR...", type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@click.option("--host", default=SeederConfig.host, show_default=True, metavar="HOST", help="Address to listen on.")
@click.option(
    "--port",
    default=SeederConfig.port,
    show_default=True,
    type=click.IntRange(0, 65535),
    metavar="PORT",
    help="Port of the HTTP side (torrents, files, the embedded tracker); 0: any free port.",
)
@click.option(
    "--bt-port",
    default=SeederConfig.bt_port,
    show_default=True,
    type=click.IntRange(0, 65535),
    metavar="PORT",
    help="Port of the BitTorrent wire protocol; 0: any free port.",
)
@click.option(
    "--tracker",
    default=None,
    callback=TRACKERS,
    metavar="URL[,URL...]",
    help="The tracker's base URL, or several of one cluster, asked in turn when one does not answer; without it "
    "a tracker runs in this process.",
)
@click.option(
    "--advertise",
    default=None,
    metavar="URL",
    help="Base URL clients reach this seeder at, for torrents [default: the Host of each request].",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    metavar="DIR",
    help="Where the hash index and the embedded tracker's database live [default: ~/.local/state/shoal].",
)
@fleet_options(client=True)
@verbose_option
def seed(
    dirs: tuple[Path, ...],
    host: str,
    port: int,
    bt_port: int,
    tracker: str | None,
    advertise: str | None,
    state_dir: Path | None,
    fleet: FleetOptions,
    verbose: int,
) -> None:
    """Watch each DIR and publish every file in it: to Shoal peers, as .torrent files, over BitTorrent."""
    configure_logging(verbose, False)
    if advertise is not None and urlsplit(advertise).scheme not in ("http", "https"):
        raise click.BadParameter(f"{advertise!r} is not an http(s) URL", param_hint="--advertise")
    names = [d.resolve().name for d in dirs]
    if len(set(names)) != len(names):
        raise click.BadParameter(f"watched directories need distinct names, got {names}", param_hint="DIR...")
    config = SeederConfig(dirs=tuple(dirs), host=host, port=port, bt_port=bt_port, tracker=tracker, advertise=advertise)
    if state_dir is not None:
        config = replace(config, state_dir=state_dir)

    def go() -> None:
        run = replace(config, credentials=fleet.load())
        try:
            asyncio.run(run_seeder(run))
        except OSError as exc:
            raise UsageError(f"cannot start the seeder on {host}: {exc.strerror or exc}") from None

    run_or_exit(go)
