"""``shoal mirror manager|worker|ctl``: scheduled mirror jobs (tunasync's design) on Shoal.

The commands of the two mirror processes live here, and the manager's composition root (its HTTP API over
the SQL store, and the scheduler); the worker's, which hosts a seeder over its job directories so every
version a job brings in is published to the swarm at once, is cli.mirror_worker. ``ctl`` is a thin client
of the manager's API; its errors become exit codes in cli.main.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from shoal.cli.config_file import configured
from shoal.cli.fleet import FleetOptions, fleet_options
from shoal.cli.main import configure_logging, log_options, run_or_exit, verbose_option
from shoal.core.errors import ManagerRefused, UsageError
from shoal.core.hosts import is_loopback_host

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
DEFAULT_MANAGER = "http://127.0.0.1:6970"


def _fail_usage(message: str) -> None:
    raise UsageError(message)


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


@configured("SHOAL_MIRROR_MANAGER", config_file=False)
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
    "--public-status",
    is_flag=True,
    help="Serve GET /jobs (tunasync's status shape) without the token, read-only [default: [manager] public_status].",
)
@click.option(
    "--public-dashboard",
    is_flag=True,
    help="With a token: the read-only status page (/) is readable without it [default: the config's "
    "public_dashboard, false].",
)
@verbose_option
def manager(
    config_path: Path, host: str | None, port: int | None, public_status: bool, public_dashboard: bool, verbose: int
) -> None:
    """Run the mirror manager: job status in SQL, the schedule, workers' registration and the ctl API.

    Without a token ([manager] token or token_env) it only listens on a loopback address. SIGHUP re-reads
    the config's jobs (as 'ctl reload' does); a config that does not load is logged and the running one kept."""
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
            public_status=public_status or settings.public_status,
            public_dashboard=public_dashboard or settings.public_dashboard,
        )
        if not settings.token and not is_loopback_host(settings.host):
            raise UsageError(
                f"refusing to listen on {settings.host} without a token: set [manager] token or token_env "
                "(workers and ctl then send it), or listen on 127.0.0.1"
            )
        config = replace(config, manager=settings)
        mgr = MirrorManager(config, config_path=config_path, load=load_config)
        async_url(mgr.db)  # a malformed URL is a usage error before anything starts
        detail = f" (database {safe_url(mgr.db)})"
        asyncio.run(serve(build_app(mgr), settings.host, settings.port, "mirror manager", detail, on_hangup=mgr.hangup))

    run_or_exit(go)


# -- worker ------------------------------------------------------------------------------------------


@configured("SHOAL_MIRROR_WORKER", config_file=False)
@mirror.command()
@config_option("[worker] table")
@click.option(
    "--name",
    default=None,
    metavar="NAME",
    help="This worker's name; jobs may ask for it by name [default: the config's [worker] name].",
)
@fleet_options(client=True)
@verbose_option
def worker(config_path: Path, name: str | None, fleet: FleetOptions, verbose: int) -> None:
    """Run a mirror worker: take jobs from the manager, run them into its [worker] directory, and seed
    the results (an embedded seeder, with its own tracker unless [worker] tracker names one).

    The fleet's options are its seeder's, as shoal seed takes them; each falls back to the [worker] key of
    the same name (fleet_token_file, ca, tls_cert, tls_key, tls_client_ca). SIGHUP re-reads the [worker]
    table (its concurrency and directory); a config that does not load is logged and the running settings
    kept. A changed token file is read again within a second."""
    configure_logging(verbose, False)

    def go() -> None:
        from shoal.mirror.config import load_config

        config = load_config(config_path)
        chosen = name if name is not None else config.worker.name
        if chosen is None:
            raise UsageError("the worker needs a name: give --name NAME or set [worker] name in the config")
        _check_name(chosen, "worker name")
        directory = Path(config.worker.directory)
        try:
            (directory / ".shoal-seeder").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot use {directory} as the mirror directory: {exc.strerror or exc}") from None
        from shoal.cli.mirror_worker import run_worker, worker_fleet

        credentials = worker_fleet(fleet, config.worker, config_path.parent).load()
        asyncio.run(run_worker(config_path, chosen, config.worker, credentials))

    run_or_exit(go)


@mirror.command("import-tunasync")
@click.argument("worker_conf", metavar="WORKER.CONF", type=click.Path(dir_okay=False, path_type=Path))
@click.argument(
    "manager_conf", metavar="[MANAGER.CONF]", required=False, type=click.Path(dir_okay=False, path_type=Path)
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Write the mirrors.toml to FILE (whole or not at all, mode 0600) instead of stdout.",
)
@log_options
def import_tunasync(worker_conf: Path, manager_conf: Path | None, output: Path | None) -> None:
    """Convert tunasync's WORKER.CONF (with its [include] files) and MANAGER.CONF into a mirrors.toml.

    Every key that could not be carried over is listed on stderr, with why."""
    configure_logging(0, False)

    def go() -> None:
        from shoal.core.errors import ConfigError
        from shoal.core.mirror_toml import parse_config
        from shoal.mirror.config import import_tunasync as convert
        from shoal.mirror.config import write_atomically

        conversion = convert(worker_conf, manager_conf)
        try:  # what is written must be a config the manager and worker accept
            parse_config(conversion.toml, str(output or "the converted configuration"))
        except ConfigError as exc:
            raise UsageError(f"the converted configuration would not load, so nothing was written: {exc}") from None
        for skipped in conversion.skipped:
            click.echo(f"not carried over: {skipped}", err=True)
        if output is None:
            click.echo(conversion.toml, nl=False)
        else:
            write_atomically(output, conversion.toml)
        where = f" into {output}" if output is not None else ""
        click.echo(
            f"converted {len(conversion.jobs)} jobs{where}; {len(conversion.skipped)} keys not carried over", err=True
        )

    run_or_exit(go)


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
@verbose_option
@click.pass_context
def ctl(ctx: click.Context, manager_url: str, token: str | None, verbose: int) -> None:
    """Control the mirror manager: list jobs, start, stop, disable, enable, restart, reload, workers;
    read a job's run logs."""
    configure_logging(verbose, False)
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


def _statuses(value: str | None) -> frozenset[str] | None:
    """``-s success,failed``: the statuses asked for (tunasynctl's comma-separated form), each checked."""
    from shoal.core.mirror_job import JobStatus

    if value is None:
        return None
    known = [s.value for s in JobStatus]
    asked = frozenset(part.strip() for part in value.split(","))
    unknown = sorted(asked - set(known))
    if unknown:
        raise UsageError(f"unknown status {unknown[0]!r} (known: {', '.join(known)})")
    return asked


@ctl.command("list")
@click.argument("worker_names", metavar="[WORKER]...", nargs=-1)
@click.option("-a", "--all", "include_all", is_flag=True, help="Include disabled jobs.")
@click.option(
    "-s",
    "--status",
    default=None,
    metavar="STATUS[,STATUS...]",
    help="Only jobs in these statuses (none, pre-syncing, syncing, success, failed, paused, disabled).",
)
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True, help="A table or JSON.")
@click.pass_context
def list_(ctx: click.Context, worker_names: tuple[str, ...], include_all: bool, status: str | None, fmt: str) -> None:
    """The jobs' status: worker, status, last update, next run, size, upstream, last error. With WORKERs,
    only the jobs that run (or last ran) on them."""
    from shoal.core.units import format_bytes

    statuses = run_or_exit(lambda: _statuses(status))
    run_or_exit(lambda: [_check_name(name, "worker") for name in worker_names])
    include = include_all or (statuses is not None and "disabled" in statuses)
    jobs = [
        j
        for j in _call(ctx, lambda c: c.jobs(include_disabled=include))
        if (statuses is None or j.status in statuses) and (not worker_names or j.worker in worker_names)
    ]
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


async def _check_jobs_worker(client: Any, job: str, worker: str) -> None:
    """tunasynctl's ``-w WORKER`` names the job's worker: a job of another worker is a usage error, so a
    command meant for one worker's job never acts on a namesake elsewhere."""
    where = (await client.job(job)).worker
    if where not in (None, worker):
        raise UsageError(f"job {job!r} runs on worker {where!r}, not {worker!r}")


def _job_command(action: str, doc: str) -> None:
    @click.argument("job")
    @click.pass_context
    def command(ctx: click.Context, /, job: str, **options: Any) -> None:
        run_or_exit(lambda: _check_name(job, "job"))
        worker = options.get("worker")
        if worker is not None:
            run_or_exit(lambda: _check_name(worker, "worker"))
        force = bool(options.get("force"))

        async def act(client: Any) -> Any:
            if worker is not None and action != "start":  # tunasynctl names the job's worker: check it
                await _check_jobs_worker(client, job, worker)
                return await client.job_action(job, action)
            return await client.job_action(job, action, force=force, worker=worker)

        result = _call(ctx, act)
        if result.queued:
            click.echo(f"{result.name}: queued: it starts when a worker has a free slot (--force starts it now)")
            return
        click.echo(f"{result.name}: {result.status}" + (f" on {result.worker}" if result.worker else ""))

    command.__doc__ = doc
    worker_help = "Run it on WORKER." if action == "start" else "tunasynctl's -w: checked to be the job's worker."
    command = click.option("-w", "--worker", default=None, metavar="WORKER", help=worker_help)(command)
    if action == "start":
        command = click.option(
            "-f", "--force", is_flag=True, help="Start at once even if the worker runs all it may (else it waits)."
        )(command)
    ctl.command(action)(command)


_job_command("start", "Start JOB now (a paused one too); on a full worker it waits for a free slot.")
_job_command("stop", "Stop JOB: kill a running sync; the schedule leaves it alone until start or restart.")
_job_command("disable", "Disable JOB: kill a running sync; it never runs until enabled.")
_job_command("enable", "Enable a disabled JOB; it waits for its schedule.")
_job_command("restart", "Run JOB afresh, killing a running sync first.")


def _worker_option(help_text: str) -> Callable[[F], F]:
    """``-w WORKER``: tunasynctl's spelling of a command's WORKER argument."""
    return click.option("-w", "--worker", "worker_option", default=None, metavar="WORKER", help=help_text)


def _one_worker(argument: str | None, option: str | None) -> str | None:
    if argument is not None and option is not None and argument != option:
        raise UsageError(f"two workers named: {argument!r} and -w {option!r}")
    return argument if argument is not None else option


@ctl.command()
@click.argument("worker_argument", metavar="[WORKER]", required=False)
@_worker_option("The same as WORKER (tunasynctl's form).")
@click.pass_context
def reload(ctx: click.Context, worker_argument: str | None, worker_option: str | None) -> None:
    """Re-read the manager's config file (its jobs), or ask WORKER to re-read its own."""
    worker_name = run_or_exit(lambda: _one_worker(worker_argument, worker_option))
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
@click.argument("worker_argument", metavar="WORKER", required=False)
@_worker_option("The same as WORKER (tunasynctl's form).")
@click.pass_context
def rm_worker(ctx: click.Context, worker_argument: str | None, worker_option: str | None) -> None:
    """Forget WORKER; its running jobs fail as lost and run elsewhere. A live worker registers again."""
    worker_name = run_or_exit(lambda: _one_worker(worker_argument, worker_option))
    if worker_name is None:
        run_or_exit(lambda: _fail_usage("name the worker: rm-worker WORKER (or -w WORKER)"))
    run_or_exit(lambda: _check_name(worker_name, "worker"))
    result = _call(ctx, lambda c: c.remove_worker(worker_name))
    click.echo(f"removed {worker_name}; failed: {', '.join(result.jobs_failed) or '-'}")


@ctl.command()
@click.argument("job")
@click.option("--follow", "-f", is_flag=True, help="Keep printing as the run goes on, and the runs after it.")
@click.option("--run", "run", default=None, metavar="RUN", help="This run's log (a name --runs lists), not the latest.")
@click.option(
    "--tail",
    "tail",
    default=None,
    metavar="SIZE",
    help="Only the last SIZE of the log (bytes, or 64K, 1M), from a line's start [default: all of it; through the "
    "manager its last 1M].",
)
@click.option("--runs", "list_runs", is_flag=True, help="List the job's run logs kept, oldest first.")
@click.option(
    "--config",
    "config_path",
    envvar="SHOAL_MIRROR_CONFIG",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Read the logs on this host, where the worker with this mirror config writes them [default: "
    "$SHOAL_MIRROR_CONFIG; without either, through the manager from the job's worker].",
)
@click.pass_context
def logs(
    ctx: click.Context,
    job: str,
    follow: bool,
    run: str | None,
    tail: str | None,
    list_runs: bool,
    config_path: Path | None,
) -> None:
    """Print JOB's latest run log (or --run RUN's). With --config, read on the worker's host; without it,
    from any host through the manager (with the token, or none where the status page is public), bounded
    and with the job's secrets redacted on its worker."""
    from shoal.cli import mirror_logs
    from shoal.core.log_share import MAX_LOG_READ
    from shoal.core.units import parse_size

    def go() -> None:
        _check_name(job, "job")
        if follow and list_runs:
            raise UsageError("give --follow or --runs, not both")
        size = parse_size(tail) if tail is not None else None
        if size is not None and size < 1:
            raise UsageError("--tail must be at least 1 byte")
        if config_path is not None:
            mirror_logs.print_local(config_path, job, run=run, tail=size, follow=follow, list_runs=list_runs)
            return
        if size is not None and size > MAX_LOG_READ:
            raise UsageError(
                f"--tail through the manager is at most {MAX_LOG_READ} bytes (1M); on the worker's "
                "host, --config reads it all"
            )
        manager_url, token = ctx.obj
        mirror_logs.print_remote(manager_url, token, job, run=run, tail=size, follow=follow, list_runs=list_runs)

    run_or_exit(go)


@ctl.command()
@click.option("-w", "--worker", "worker_name", default=None, metavar="WORKER", help="Ask whether WORKER is live.")
@click.pass_context
def ping(ctx: click.Context, worker_name: str | None) -> None:
    """Whether the manager answers (and, with -w, whether WORKER is live); exit 1 when not."""
    if worker_name is None:
        health = _call(ctx, lambda c: c.health())
        click.echo(f"pong (manager session {health.session})")
        return
    run_or_exit(lambda: _check_name(worker_name, "worker"))
    found = {w.name: w for w in _call(ctx, lambda c: c.workers())}
    worker = found.get(worker_name)

    def verdict() -> None:
        if worker is None:
            raise ManagerRefused(f"the manager knows no worker named {worker_name!r}", status=404)
        if not worker.live:
            raise ManagerRefused(
                f"worker {worker_name} is not live (last seen {_when(worker.last_seen)} UTC)", status=503
            )

    run_or_exit(verdict)
    click.echo(f"{worker_name}: pong (last seen {_when(worker.last_seen if worker else None)} UTC)")


@ctl.command("set-size")
@click.argument("job")
@click.argument("size")
@click.option(
    "-w",
    "--worker",
    "worker_name",
    default=None,
    metavar="WORKER",
    help="tunasynctl's -w: checked to be the job's worker.",
)
@click.pass_context
def set_size(ctx: click.Context, job: str, size: str, worker_name: str | None) -> None:
    """Show SIZE (bytes, or 1024-based units: 300G, 1.41T) as JOB's size until its next successful sync
    reports one; GET /jobs shows SIZE as written, as tunasync does."""
    from shoal.core.units import format_bytes, parse_size

    run_or_exit(lambda: _check_name(job, "job"))
    if worker_name is not None:
        run_or_exit(lambda: _check_name(worker_name, "worker"))
    size_bytes = run_or_exit(lambda: parse_size(size))

    async def act(client: Any) -> Any:
        if worker_name is not None:
            await _check_jobs_worker(client, job, worker_name)
        return await client.set_size(job, size_bytes, size.strip())

    result = _call(ctx, act)
    click.echo(f"{result.name}: size {format_bytes(result.size)}")


@ctl.command()
@click.pass_context
def flush(ctx: click.Context) -> None:
    """Drop every disabled job."""
    result = _call(ctx, lambda c: c.flush())
    click.echo(f"removed: {', '.join(result.removed) or '-'}")
