"""``shoal mirror manager|worker|ctl``: scheduled mirror jobs (tunasync's design) on Shoal.

The composition roots of the two mirror processes live here: the manager (its HTTP API over the SQL
store, and the scheduler), and the worker, which hosts a seeder over its job directories (cli.seed's
``hosted_seeder``) so every version a job brings in is published to the swarm at once. ``ctl`` is a thin
client of the manager's API; its errors become exit codes in cli.main.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from shoal.cli.main import configure_logging, run_or_exit, verbose_option
from shoal.core.errors import UsageError

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
DEFAULT_MANAGER = "http://127.0.0.1:6970"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_name(value: str, what: str) -> str:
    if not _NAME.fullmatch(value):
        raise UsageError(f"{what} {value!r} is not a valid name ([A-Za-z0-9][A-Za-z0-9._-]{{0,63}})")
    return value


@click.group()
def mirror() -> None:
    """Mirror jobs: a manager keeps their status and schedule, workers run them into seeded directories."""


# -- manager -----------------------------------------------------------------------------------------


def config_option(tables: str) -> Callable[[F], F]:
    """``--config FILE``: the mirror config, of which a process reads ``tables``."""
    return click.option(
        "--config",
        "config_path",
        required=True,
        type=click.Path(dir_okay=False, path_type=Path),
        metavar="FILE",
        help=f"The mirror config (TOML); this reads its {tables}.",
    )


@mirror.command()
@config_option("[manager] table and [[jobs]]")
@click.option("--host", default=None, metavar="HOST", help="Address to listen on [default: the config's, 127.0.0.1].")
@click.option(
    "--port",
    default=None,
    type=click.IntRange(0, 65535),
    metavar="PORT",
    help="Port to listen on (0: any free port) [default: the config's, 6970].",
)
@click.option(
    "--public-dashboard",
    is_flag=True,
    help="With a token: the read-only status page (/) is readable without it [default: the config's "
    "public_dashboard, false].",
)
@verbose_option
def manager(config_path: Path, host: str | None, port: int | None, public_dashboard: bool, verbose: int) -> None:
    """Run the mirror manager: job status in SQL, the schedule, workers' registration and the ctl API.

    Without a token ([manager] token or token_env) it only listens on a loopback address."""
    configure_logging(verbose, False)

    def go() -> None:
        from msgspec.structs import replace

        from shoal.http.listen import serve
        from shoal.mirror.config import load_config
        from shoal.mirror.manager import MirrorManager
        from shoal.mirror.manager_http import build_app
        from shoal.storage.db import async_url, safe_url

        config = load_config(config_path)  # ConfigError (exit 2) names the key and the line
        settings = config.manager
        settings = replace(
            settings,
            host=host or settings.host,
            port=settings.port if port is None else port,
            public_dashboard=public_dashboard or settings.public_dashboard,
        )
        if not settings.token and not _is_loopback(settings.host):
            raise UsageError(
                f"refusing to listen on {settings.host} without a token: set [manager] token or token_env "
                "(workers and ctl then send it), or listen on 127.0.0.1"
            )
        config = replace(config, manager=settings)
        mgr = MirrorManager(config, config_path=config_path, load=load_config)
        async_url(mgr.db)  # a malformed URL is a usage error before anything starts
        asyncio.run(
            serve(build_app(mgr), settings.host, settings.port, "mirror manager", f" (database {safe_url(mgr.db)})")
        )

    run_or_exit(go)


# -- worker ------------------------------------------------------------------------------------------


@mirror.command()
@config_option("[worker] table")
@click.option("--name", required=True, metavar="NAME", help="This worker's name; jobs may ask for it by name.")
@verbose_option
def worker(config_path: Path, name: str, verbose: int) -> None:
    """Run a mirror worker: take jobs from the manager, run them into its [worker] directory, and seed
    the results (an embedded seeder, with its own tracker unless [worker] tracker names one)."""
    configure_logging(verbose, False)

    def go() -> None:
        from shoal.mirror.config import load_config

        _check_name(name, "worker name")
        config = load_config(config_path)
        directory = Path(config.worker.directory)
        try:
            (directory / ".shoal-seeder").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot use {directory} as the mirror directory: {exc.strerror or exc}") from None
        asyncio.run(_run_worker(config_path, name, config.worker))

    run_or_exit(go)


async def _run_worker(config_path: Path, name: str, settings: Any) -> None:
    from shoal.cli.seed import hosted_seeder
    from shoal.http.listen import until_signalled
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
    )
    try:
        hosted = hosted_seeder(seed_config)
        port, bt_port = await hosted.__aenter__()
    except OSError as exc:
        raise UsageError(f"cannot start the worker's seeder on {settings.seed_host}: {exc.strerror or exc}") from None
    try:
        local_host = "127.0.0.1" if settings.seed_host in ("0.0.0.0", "::", "") else settings.seed_host
        url = (settings.advertise or f"http://{local_host}:{port}").rstrip("/")
        w = MirrorWorker(
            name,
            settings,
            run_attempt,
            url=url,
            reload=lambda: load_config(config_path).worker,
            pool_token=os.environ.get("SHOAL_POOL_TOKEN") or None,
        )
        print(
            f"mirror worker {name} listening on http://{settings.seed_host}:{port} "
            f"(seeding {directory}; BitTorrent wire on port {bt_port}; manager {settings.manager})",
            flush=True,
        )
        serving = asyncio.create_task(w.run())
        signalled = asyncio.create_task(until_signalled())
        done, _ = await asyncio.wait({serving, signalled}, return_when=asyncio.FIRST_COMPLETED)
        for task in (serving, signalled):
            task.cancel()
        await asyncio.gather(serving, signalled, return_exceptions=True)
        if serving in done:
            serving.result()  # the manager refused this worker (a wrong token, say): say so, exit non-zero
    finally:
        await hosted.__aexit__(None, None, None)


# -- ctl ---------------------------------------------------------------------------------------------


@mirror.group()
@click.option(
    "--manager",
    "manager_url",
    envvar="SHOAL_MIRROR_MANAGER",
    default=DEFAULT_MANAGER,
    metavar="URL",
    help=f"The manager's base URL [default: $SHOAL_MIRROR_MANAGER, else {DEFAULT_MANAGER}].",
)
@click.option(
    "--token",
    envvar="SHOAL_MIRROR_TOKEN",
    default=None,
    metavar="TOKEN",
    help="The manager's bearer token [default: $SHOAL_MIRROR_TOKEN].",
)
@click.pass_context
def ctl(ctx: click.Context, manager_url: str, token: str | None) -> None:
    """Control the mirror manager: list jobs, start, stop, disable, enable, restart, reload, workers."""
    ctx.obj = (manager_url, token or None)


def _call(ctx: click.Context, action: Callable[[Any], Awaitable[T]]) -> T:
    from shoal.mirror.client import MirrorClient

    url, token = ctx.obj

    async def go() -> T:
        async with MirrorClient(url, token) as client:
            return await action(client)

    return run_or_exit(lambda: asyncio.run(go()))  # type: ignore[no-any-return]


def _echo_json(replies: list[Any]) -> None:
    """The manager's replies (msgspec structs) as indented JSON."""
    import msgspec

    click.echo(json.dumps(msgspec.to_builtins(replies), indent=2))


def _when(t: float | None) -> str:
    return "-" if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _print_table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    Console(width=max(160, Console().width)).print(table)


FORMATS = click.Choice(["table", "json"])


@ctl.command("list")
@click.option("--all", "include_all", is_flag=True, help="Include disabled jobs.")
@click.option(
    "--status", default=None, metavar="STATUS", help="Only jobs in this status (none, syncing, success, failed, ...)."
)
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True, help="A table or JSON.")
@click.pass_context
def list_(ctx: click.Context, include_all: bool, status: str | None, fmt: str) -> None:
    """The jobs' status: worker, status, last update, next run, size, upstream, last error."""
    from shoal.core.units import format_bytes

    jobs = _call(ctx, lambda c: c.jobs(include_disabled=include_all, status=status))
    if fmt == "json":
        _echo_json(jobs)
        return
    rows = [
        [
            j.name,
            j.worker or "-",
            j.status,
            _when(j.last_update),
            _when(j.last_ended),
            _when(j.next_schedule),
            format_bytes(j.size),
            j.upstream,
            (j.error_msg.strip().splitlines() or [""])[-1][:80],  # the last line says most
        ]
        for j in jobs
    ]
    columns = ["name", "worker", "status", "last update", "last ended", "next", "size", "upstream", "error"]
    _print_table("mirror jobs (UTC)", columns, rows)


def _job_command(action: str, doc: str) -> None:
    @click.argument("job")
    @click.pass_context
    def command(ctx: click.Context, /, job: str, **options: Any) -> None:
        run_or_exit(lambda: _check_name(job, "job"))
        result = _call(ctx, lambda c: c.job_action(job, action, force=bool(options.get("force"))))
        click.echo(f"{result.name}: {result.status}" + (f" on {result.worker}" if result.worker else ""))

    command.__doc__ = doc
    if action == "start":
        command = click.option("--force", is_flag=True, help="Start even if its worker is running all it may.")(command)
    ctl.command(action)(command)


_job_command("start", "Start JOB now (a paused one too).")
_job_command("stop", "Stop JOB: kill a running sync; the schedule leaves it alone until start or restart.")
_job_command("disable", "Disable JOB: kill a running sync; it never runs until enabled.")
_job_command("enable", "Enable a disabled JOB; it waits for its schedule.")
_job_command("restart", "Run JOB afresh, killing a running sync first.")


@ctl.command()
@click.argument("worker_name", metavar="[WORKER]", required=False)
@click.pass_context
def reload(ctx: click.Context, worker_name: str | None) -> None:
    """Re-read the manager's config file (its jobs), or ask WORKER to re-read its own."""
    if worker_name is not None:
        run_or_exit(lambda: _check_name(worker_name, "worker"))
    result = _call(ctx, lambda c: c.reload(worker_name))
    if worker_name is not None:
        click.echo(f"{worker_name}: reloading")
        return
    for what in ("added", "updated", "disabled"):
        click.echo(f"{what}: {', '.join(getattr(result, what)) or '-'}")


@ctl.command()
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True, help="A table or JSON.")
@click.pass_context
def workers(ctx: click.Context, fmt: str) -> None:
    """The workers: live or not, last heard of, jobs running, concurrency."""
    found = _call(ctx, lambda c: c.workers())
    if fmt == "json":
        _echo_json(found)
        return
    rows = [
        [w.name, "yes" if w.live else "no", _when(w.last_seen), f"{w.running}/{w.concurrency}", w.url] for w in found
    ]
    _print_table("mirror workers (UTC)", ["name", "live", "last seen", "running", "url"], rows)


@ctl.command("rm-worker")
@click.argument("worker_name", metavar="WORKER")
@click.pass_context
def rm_worker(ctx: click.Context, worker_name: str) -> None:
    """Forget WORKER; its running jobs fail as lost and run elsewhere. A live worker registers again."""
    run_or_exit(lambda: _check_name(worker_name, "worker"))
    result = _call(ctx, lambda c: c.remove_worker(worker_name))
    click.echo(f"removed {worker_name}; failed: {', '.join(result.jobs_failed) or '-'}")


@ctl.command()
@click.pass_context
def flush(ctx: click.Context) -> None:
    """Drop every disabled job."""
    result = _call(ctx, lambda c: c.flush())
    click.echo(f"removed: {', '.join(result.removed) or '-'}")
