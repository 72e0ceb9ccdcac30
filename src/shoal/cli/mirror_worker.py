"""The mirror worker's process (``shoal mirror worker``, whose command is cli.mirror's): its composition root,
which hosts a seeder over the job directories (cli.seed's ``hosted_seeder``) beside the worker, so every
version a job brings in is published to the swarm at once; and the environment jobs run in."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from pathlib import Path
from typing import Any

from shoal.cli.fleet import FleetOptions
from shoal.core.errors import UsageError
from shoal.http.credentials import Credentials


def worker_fleet(given: FleetOptions, settings: Any, base: Path) -> FleetOptions:
    """The worker seeder's fleet options: each option given (or its variable), else the [worker] key of the
    same name, a path relative to the config file's directory."""

    def key(name: str) -> str | None:
        value = getattr(settings, name)
        return None if value is None else str(base / value)  # an absolute value stays as it is

    return FleetOptions(
        token_file=given.token_file or key("fleet_token_file"),
        ca=given.ca or key("ca"),
        cert=given.cert or key("tls_cert"),
        key=given.key or key("tls_key"),
        client_ca=given.client_ca or key("tls_client_ca"),
    )


async def run_worker(config_path: Path, name: str, settings: Any, credentials: Credentials) -> None:
    from shoal.cli.seed import hosted_seeder
    from shoal.http.listen import until_signalled
    from shoal.http.token_reload import reloading
    from shoal.mirror.config import load_config
    from shoal.mirror.runner import run_attempt
    from shoal.mirror.worker import MirrorWorker
    from shoal.seeder.config import SeederConfig

    directory = Path(settings.directory)
    state_dir = directory / ".shoal-seeder"  # hidden: the seeder never publishes it
    seed_config = SeederConfig(
        dirs=(directory,),
        host=settings.seed_host,
        port=settings.seed_port,
        bt_port=0,
        tracker=settings.tracker,
        advertise=settings.advertise,
        state_dir=state_dir,
        credentials=credentials,
    )
    async with contextlib.AsyncExitStack() as stack:
        # The token file is watched (not SIGHUP: the worker's SIGHUP re-reads its [worker] table).
        await stack.enter_async_context(reloading(credentials, on_sighup=False))
        try:
            port, bt_port = await stack.enter_async_context(hosted_seeder(seed_config))
        except OSError as exc:
            where = settings.seed_host
            raise UsageError(f"cannot start the worker's seeder on {where}: {exc.strerror or exc}") from None
        local_host = "127.0.0.1" if settings.seed_host in ("0.0.0.0", "::", "") else settings.seed_host
        url = (settings.advertise or f"{credentials.peer_scheme}://{local_host}:{port}").rstrip("/")
        w = MirrorWorker(
            name,
            settings,
            functools.partial(run_attempt, base_env=_job_environment(settings.token_env)),
            url=url,
            reload=lambda: load_config(config_path).worker,
            pool_token=os.environ.get("SHOAL_POOL_TOKEN") or None,
            credentials=credentials,
        )
        listening = (
            f"mirror worker {name} listening on {credentials.peer_scheme}://{settings.seed_host}:{port} "
            f"(seeding {directory}; BitTorrent wire on port {bt_port}; manager {settings.manager})"
        )
        serving = asyncio.create_task(w.run())
        signalled = asyncio.create_task(until_signalled(listening, on_hangup=w.hangup))
        done, _ = await asyncio.wait({serving, signalled}, return_when=asyncio.FIRST_COMPLETED)
        for task in (serving, signalled):
            task.cancel()
        await asyncio.gather(serving, signalled, return_exceptions=True)
        if serving in done:
            serving.result()  # the manager refused this worker (a wrong token, say): say so, exit non-zero


SECRET_VARIABLES = ("SHOAL_MIRROR_TOKEN", "SHOAL_POOL_TOKEN", "SHOAL_TRACKER_DB")
"""Variables that hold secrets by Shoal's conventions (README, Secrets), kept from the commands jobs run."""


def _job_environment(token_env: str | None) -> dict[str, str]:
    """The environment a job's hooks and command start from: the worker's, without the secrets it reads
    from there (the manager's token, a pool's) and without the service manager's socket. A job runs the
    upstream's tools (rsync, scripts) that need none of them; one that does names it in its ``env`` table."""
    from shoal.systemd.notify import SOCKET_ENV

    hidden = {*SECRET_VARIABLES, SOCKET_ENV, *([token_env] if token_env else [])}
    return {name: value for name, value in os.environ.items() if name not in hidden}


# -- import-tunasync --------------------------------------------------------------------------------
