"""``shoal pool``: create pools on the tracker, push downloads to them, and watch the pushes live.

Members join with ``shoal daemon --tracker URL --pool NAME``, or at runtime with ``shoal pool join NAME``
(through the daemon's control socket; ``leave`` too). A pool's token (its owner's) is
printed once by ``create``; every other command takes it, or the tracker operator's token, with
``--token`` or ``$SHOAL_POOL_TOKEN`` (``create`` takes the operator's, when the tracker has one).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import msgspec

from shoal.cli.main import click_parser, configure_logging, run_or_exit, socket_option, verbose_option
from shoal.cli.pool_tokens import pool_specs, pool_token_file_option
from shoal.core.errors import UsageError
from shoal.core.pool_messages import AssignmentView, JobList, JobView, PoolList, PushRequest
from shoal.core.units import format_bytes
from shoal.core.whole_file import parse_user_digest
from shoal.tracker.pool_client import PoolClient

if TYPE_CHECKING:
    from shoal.daemon.client import DaemonClient


def _client(ctx: click.Context) -> PoolClient:
    """The tracker's pool client, made when a subcommand runs: ``--help`` of any of them needs no tracker."""
    pool_ctx = ctx.parent
    assert pool_ctx is not None
    tracker, token = pool_ctx.params["tracker"], pool_ctx.params["token"]
    if tracker is None:
        raise click.UsageError("no tracker: give --tracker URL or set $SHOAL_TRACKER", ctx=pool_ctx)
    fleet_key = None
    if token_file := pool_ctx.params.get("fleet_token_file"):
        from shoal.http.credentials import read_token_file

        try:
            fleet_key = read_token_file(token_file)
        except UsageError as exc:
            raise click.BadParameter(str(exc), ctx=pool_ctx, param_hint="--fleet-token-file") from None
    try:
        return PoolClient(tracker, token, fleet_key=fleet_key)
    except UsageError as exc:
        raise click.BadParameter(str(exc), ctx=pool_ctx, param_hint="--tracker") from None


@click.group()
@click.option(
    "--tracker",
    envvar="SHOAL_TRACKER",
    metavar="URL[,URL...]",
    help="The tracker's base URL, or several of one cluster, asked in turn [default: $SHOAL_TRACKER].",
)
@click.option(
    "--token",
    envvar="SHOAL_POOL_TOKEN",
    metavar="TOKEN",
    help="The pool's token, or the tracker operator's [default: $SHOAL_POOL_TOKEN].",
)
@click.option(
    "--fleet-token-file",
    envvar="SHOAL_FLEET_TOKEN_FILE",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="The fleet's token, when the tracker needs one [default: $SHOAL_FLEET_TOKEN_FILE].",
)
@verbose_option
@click.pass_context
def pool(
    ctx: click.Context, tracker: str | None, token: str | None, fleet_token_file: str | None, verbose: int
) -> None:
    """Pools of daemons that downloads are pushed to."""
    configure_logging(verbose, False)
    if token and ctx.get_parameter_source("token") is click.core.ParameterSource.COMMANDLINE:
        from shoal.cli.pool_tokens import TOKEN_ENV, warn_token_on_command_line

        warn_token_on_command_line("--token", f"${TOKEN_ENV}")


@pool.command()
@click.argument("name")
@click.option("--private", is_flag=True, help="Members and status need the token printed here too.")
@click.option(
    "--allow",
    multiple=True,
    metavar="ENTRY",
    help="What pushes may fetch (repeatable): a URL prefix, an address or network (10.0.0.0/8), a host name "
    "(*.example.com). Default: any URL but loopback and link-local addresses.",
)
@click.pass_context
def create(ctx: click.Context, name: str, private: bool, allow: tuple[str, ...]) -> None:
    """Create the pool NAME and print its token: pushes, cancels and rm need it."""
    reply = run_or_exit(lambda: _client(ctx).create(name, private=private, allow=list(allow)))
    kind = "private pool" if private else "pool"
    click.echo(f"created {kind} {name}; its token (shown once, keep it secret):")
    click.echo(reply.token)


@pool.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def list_pools(ctx: click.Context, as_json: bool) -> None:
    """List the pools you may read: every public pool, and the private ones --token opens."""
    rows = run_or_exit(lambda: _client(ctx).pools())
    if as_json:
        _echo_json(PoolList(rows))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("pool", "kind", "members live", "jobs running", box=None)
    for p in rows:
        table.add_row(p.name, "private" if p.private else "public", str(p.members_live), str(p.jobs_running))
    Console().print(table)


@pool.command()
@click.argument("name")
@click.pass_context
def rm(ctx: click.Context, name: str) -> None:
    """Remove the pool NAME, its members and its jobs."""
    run_or_exit(lambda: _client(ctx).remove(name))
    click.echo(f"removed pool {name}")


@pool.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def members(ctx: click.Context, name: str, as_json: bool) -> None:
    """List the members of the pool NAME."""
    rows = run_or_exit(lambda: _client(ctx).members(name))
    if as_json:
        _echo_json(rows)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("member", "name", "url", "site", "rack", "free", "state", box=None)
    for m in rows:
        state = "live" if m.live else "gone"
        table.add_row(m.member_id, m.name, m.url, m.site, m.rack, format_bytes(m.free), state)
    Console().print(table)


@pool.command()
@click.argument("name")
@click.argument("url")
@click.option("--dest", metavar="PATH", help="Also place the file at this absolute PATH on each member.")
@click.option("--replicas", type=click.IntRange(min=1), metavar="K", help="Fetch on K members only, and keep K copies.")
@click.option(
    "--digest",
    "--hash",
    "digest",
    callback=click_parser(parse_user_digest),
    metavar="ALGO:HEX",
    help="The whole file's digest, which members check (md5, sha1, sha224, sha256, sha384, sha512, blake2b or "
    "blake3, as for 'shoal get --digest').",
)
@click.option("--watch", is_flag=True, help="Then show the job's progress until it ends.")
@click.pass_context
def push(
    ctx: click.Context, name: str, url: str, dest: str | None, replicas: int | None, digest: str | None, watch: bool
) -> None:
    """Make the pool NAME's members fetch URL into their caches."""
    client = _client(ctx)
    job = run_or_exit(lambda: client.push(name, PushRequest(url, dest, replicas, digest)))
    click.echo(f"pushed job {job.job} to pool {name}")
    if watch:
        _watch(client, name, job.job)


@pool.command()
@click.argument("name")
@click.argument("job", required=False)
@click.option("--watch", is_flag=True, help="Refresh until the job (or every job) has ended.")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.pass_context
def status(ctx: click.Context, name: str, job: str | None, watch: bool, as_json: bool) -> None:
    """Show the pool NAME's jobs, or JOB member by member."""
    client = _client(ctx)
    if as_json:
        _echo_json(run_or_exit(lambda: client.job(name, job) if job else JobList(client.jobs(name))))
        return
    if watch and job:
        _watch(client, name, job)
        return
    from rich.console import Console

    console = Console()
    if job:
        console.print(_job_table(run_or_exit(lambda: client.job(name, job))))
    else:
        console.print(_jobs_table(run_or_exit(lambda: client.jobs(name))))


@pool.command()
@click.argument("name", metavar="NAME")
@pool_token_file_option
@socket_option
@click.pass_context
def join(ctx: click.Context, name: str, pool_token_file: str | None, socket_path: Path | None) -> None:
    """Make this host's daemon join the pool NAME of its tracker, until the daemon stops.

    A private pool's token comes from --pool-token-file, else --token or $SHOAL_POOL_TOKEN; NAME:TOKEN works
    too, but every user of the host can read it in ps."""
    pool_ctx = ctx.parent
    assert pool_ctx is not None
    (spec,) = run_or_exit(lambda: pool_specs([name], pool_token_file, pool_ctx.params["token"]))
    reply = run_or_exit(lambda: _daemon(socket_path).join_pool(spec.name, spec.token))
    if reply.changed:
        click.echo(f"joined pool {spec.name} until the daemon stops (add --pool {spec.name} to its command to keep it)")
    else:
        click.echo(f"already a member of pool {spec.name}")


@pool.command()
@click.argument("name")
@socket_option
def leave(name: str, socket_path: Path | None) -> None:
    """Make this host's daemon leave the pool NAME, until the daemon stops (a --pool it was started with
    joins again then)."""
    run_or_exit(lambda: _daemon(socket_path).leave_pool(name))
    click.echo(f"left pool {name}")


def _daemon(socket_path: Path | None) -> DaemonClient:
    from shoal.daemon.client import DaemonClient
    from shoal.daemon.config import default_socket

    return DaemonClient(socket_path or default_socket())


@pool.command()
@click.argument("name")
@click.argument("job")
@click.pass_context
def cancel(ctx: click.Context, name: str, job: str) -> None:
    """Cancel JOB: its members stop fetching."""
    run_or_exit(lambda: _client(ctx).cancel(name, job))
    click.echo(f"cancelled job {job}")


def _echo_json(reply: object) -> None:
    click.echo(json.dumps(msgspec.to_builtins(reply), indent=2))


def _watch(client: PoolClient, name: str, job: str) -> None:
    from rich.console import Console
    from rich.live import Live

    views = client.watch(name, job)  # a refusal or a tracker gone mid-watch is raised by next()
    with Live(_job_table(run_or_exit(lambda: next(views))), console=Console(), refresh_per_second=4) as live:
        while (view := run_or_exit(lambda: next(views, None))) is not None:
            live.update(_job_table(view))


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _copies(job: JobView) -> str:
    replicas = job.replicas
    return f"{replicas.current}/{replicas.target}" if replicas.target else str(replicas.current)


def _state(m: AssignmentView) -> str:
    status = m.status.value
    return status if m.live or status in ("left", "failed", "cancelled") else f"{status} (gone)"


def _job_table(job: JobView) -> Any:
    from rich.table import Table

    title = f"job {job.job} {job.status.value}: {job.url} (copies {_copies(job)})"
    if job.error:
        title += f"\n{job.error}"
    table = Table("member", "site/rack", "state", "done", "rate", "origin", "peers", "ETA", "error", title=title)
    for m in job.members:
        done = f"{format_bytes(m.done)} / {format_bytes(m.total)}" if m.total else format_bytes(m.done)
        table.add_row(
            f"{m.name or '?'} {m.member[:8]}",
            "/".join(x for x in (m.site, m.rack) if x),
            _state(m),
            done,
            f"{format_bytes(m.rate)}/s" if m.rate else "",
            format_bytes(m.from_origin),
            format_bytes(m.from_peers),
            _eta(m.eta),
            m.error,
        )
    # Once members have racks, where the job's bytes came from: each piece should cross a rack's uplink once.
    if any(m.from_rack or m.from_racks or m.from_sites for m in job.members):
        table.caption = (
            f"taken in: {format_bytes(sum(m.from_origin for m in job.members))} from the origin, "
            f"{format_bytes(sum(m.from_rack for m in job.members))} inside racks, "
            f"{format_bytes(sum(m.from_racks for m in job.members))} across racks, "
            f"{format_bytes(sum(m.from_sites for m in job.members))} across sites"
        )
    return table


def _jobs_table(jobs: list[JobView]) -> Any:
    from rich.table import Table

    table = Table("job", "state", "url", "members done", "copies", "error", box=None)
    for job in jobs:
        done = sum(1 for m in job.members if m.status.value == "done")
        table.add_row(job.job, job.status.value, job.url, f"{done}/{len(job.members)}", _copies(job), job.error)
    return table
