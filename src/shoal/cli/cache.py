"""``shoal cache``: look at and manage the node cache.

Which cache: ``--cache-dir`` when given; else the one the running daemon serves (asked on its control
socket, ``--socket``, the same default as ``shoal get``), so commands never work on another cache than the
daemon's by accident; else the default cache directory. An existing cache keeps its stored capacity.

Every command works on the cache's files and index directly (a daemon may be running on it at the same
time: the index is shared safely). ``warm``, and ``get`` of an id that is not on disk, fetch through the
running daemon when it serves this cache, so the content is seeded afterwards; else in this process.
Ids may be shortened to a unique prefix of at least 8 hex digits, as ``ls`` shows them.
"""

from __future__ import annotations

import datetime
import functools
import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from shoal.cli.main import configure_logging, run_or_exit, socket_option, verbose_option
from shoal.core.cache_export import MAX_FILES
from shoal.core.errors import DaemonUnavailable, UsageError
from shoal.core.units import format_bytes
from shoal.daemon.client import DaemonClient
from shoal.daemon.config import default_cache_dir, default_socket, index_path
from shoal.storage import cache_sync
from shoal.storage.cache_index import CacheEntry
from shoal.storage.cache_store import CacheStore, describe
from shoal.storage.placement import Destination

T = TypeVar("T")

STATUS_TIMEOUT = 10.0
"""Seconds to wait for a running daemon to say which cache it serves."""


class Options:
    """The group's options; the cache directory and the daemon are looked up once, when a command needs
    them."""

    def __init__(self, cache_dir: Path | None, socket: Path, tracker: str | None) -> None:
        self._cache_dir = cache_dir
        self.socket = socket
        self.tracker = tracker

    @functools.cached_property
    def _served(self) -> tuple[DaemonClient, Path] | None:
        """The daemon on the control socket and the cache directory it serves, if one runs."""
        client = DaemonClient(self.socket, timeout=STATUS_TIMEOUT)
        if not client.running():
            return None
        try:
            return client, Path(client.status().cache_dir)
        except DaemonUnavailable as exc:
            raise DaemonUnavailable(f"{exc} (give --cache-dir to work on a cache without asking it)") from None

    @property
    def cache_dir(self) -> Path:
        if self._cache_dir is None:
            served = self._served
            self._cache_dir = served[1] if served is not None else default_cache_dir().absolute()
        return self._cache_dir

    @contextmanager
    def store(self) -> Iterator[CacheStore]:
        with CacheStore(index_path(self.cache_dir), self.cache_dir) as store:
            yield store

    def daemon(self) -> DaemonClient | None:
        """The running daemon, when it serves this cache (one serving another would fetch into its own)."""
        served = self._served
        if served is None or not _same_dir(served[1], self.cache_dir):
            return None
        return served[0]


def _same_dir(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return a.resolve() == b.resolve()


pass_options = click.make_pass_decorator(Options)


def _run(action: Callable[[], T]) -> T:
    result: T = run_or_exit(action)
    return result


def _when(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds).isoformat(sep=" ", timespec="seconds")


def _warm(options: Options, target: str) -> CacheEntry:
    """Fetch into the cache through the daemon if it serves this cache, else here; the entry."""
    client = options.daemon()
    if client is not None:
        reply = client.warm(target)
        with options.store() as store:
            return store.entry(reply.entry.id)
    from shoal.daemon.api import Cache

    with Cache(index_path(options.cache_dir), options.cache_dir, tracker=options.tracker) as cache:
        return cache.info(cache.warm_up(target))


@click.group()
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    metavar="DIR",
    help="The cache [default: the running daemon's; else $SHOAL_CACHE_DIR, /var/cache/shoal for root, "
    "else ~/.cache/shoal].",
)
@socket_option
@click.option("--tracker", envvar="SHOAL_TRACKER", metavar="URL", help="The tracker for fetches made without a daemon.")
@verbose_option
@click.pass_context
def cache(
    ctx: click.Context, cache_dir: Path | None, socket_path: Path | None, tracker: str | None, verbose: int
) -> None:
    """Look at and manage the node cache (ids: BLAKE3 hex, blake3:HEX or sha256:HEX, or a unique prefix of
    at least 8 hex digits)."""
    configure_logging(verbose, False)
    ctx.obj = Options(cache_dir.absolute() if cache_dir else None, socket_path or default_socket(), tracker)


# The id column shows 16 hex digits: any unique prefix of 8 or more is accepted wherever an id is.
_LS_ROW = "{:<16}  {:<5}  {:>10}  {:<19}  {}"


@cache.command("ls")
@click.option("--all", "show_all", is_flag=True, help="Also list entries known but not on disk.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@pass_options
def ls(options: Options, show_all: bool, as_json: bool) -> None:
    """List cached files, least recently used first; with --all, then entries not on disk and files known by
    SHA-256 only (from a cloud-manager dump)."""

    def go() -> None:
        with options.store() as store:
            entries = sorted(store.entries(), key=lambda e: e.last_access)
            known = store.index.known_sha256("", limit=MAX_FILES) if show_all else []
        if not as_json:
            click.echo(_LS_ROW.format("ID", "FLAGS", "SIZE", "LAST USED", "NAME").rstrip())
        for e in entries:
            if not (e.cached or show_all):
                continue
            if as_json:
                click.echo(json.dumps(e.to_json()))
                continue
            flags = ("P" if e.pinned else "-") + ("U" if e.in_use else "-") + ("C" if e.cached else "-")
            click.echo(_LS_ROW.format(e.digest[:16], flags, format_bytes(e.size), _when(e.last_access), e.name))
        # Files known by SHA-256 only (a cloud-manager dump): shown by that id, which `sha256:` and 9 hex digits
        # still name uniquely enough to be typed back; never used here, so LAST USED is when it was added.
        for k in known:
            if as_json:
                view = {"id": None, "sha256": k.sha256, "name": k.name, "size": k.size, "added": k.added}
                click.echo(json.dumps({**view, "cached": False}))
                continue
            click.echo(_LS_ROW.format(f"sha256:{k.sha256[:9]}", "---", format_bytes(k.size), _when(k.added), k.name))

    _run(go)


@cache.command()
@click.argument("ident", metavar="ID")
@pass_options
def info(options: Options, ident: str) -> None:
    """Everything known of one entry, as JSON."""

    def go() -> None:
        with options.store() as store:
            click.echo(json.dumps(store.info(ident).to_json(), indent=2))

    _run(go)


@cache.command()
@click.argument("ident", metavar="ID")
@pass_options
def exists(options: Options, ident: str) -> None:
    """Exit 0 when ID's file is on this node's disk, else 1; prints cached, known (not on disk) or absent."""

    def go() -> bool:
        with options.store() as store:
            entry = store.lookup(ident)
            known = entry is not None or store.known_only(ident) is not None
        click.echo("absent" if not known else "cached" if entry and entry.cached else "known (not on disk)")
        return entry is not None and entry.cached

    sys.exit(0 if _run(go) else 1)


@cache.command()
@click.argument("path", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--pin", is_flag=True, help="Never evict it (until unpinned).")
@pass_options
def put(options: Options, path: Path, pin: bool) -> None:
    """Copy FILE into the cache; prints its id."""

    def go() -> None:
        with options.store() as store:
            click.echo(store.put(path, pin=pin).digest)

    _run(go)


@cache.command()
@click.argument("target", metavar="URL|ID")
@pass_options
def warm(options: Options, target: str) -> None:
    """Fetch URL (through the swarm) or ID (from its known sources) into the cache; prints the id."""
    _run(lambda: click.echo(_warm(options, target).digest))


@cache.command("get")
@click.argument("ident", metavar="ID")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="PATH",
    help="Write to PATH.",
)
@pass_options
def get_(options: Options, ident: str, output: Path) -> None:
    """Place ID's file at PATH (a hard link on the same filesystem; a device or a FIFO written through),
    fetching it first if needed."""

    def go() -> None:
        destination = Destination.of(output)
        destination.writable()
        with options.store() as store:
            entry = store.lookup(ident)
        if entry is None or not entry.cached:
            entry = _warm(options, ident)
        with options.store() as store:
            placed, linked = store.place(entry.digest, destination.path)
        how = "written through" if destination.through else "hard link" if linked else "copy"
        click.echo(f"{destination.path}: {format_bytes(placed.size)} ({how})", err=True)

    _run(go)


@cache.command()
@click.argument("ident", metavar="ID")
@pass_options
def evict(options: Options, ident: str) -> None:
    """Remove ID's file from the cache (refused while pinned or in use)."""

    def go() -> None:
        with options.store() as store:
            entry = store.evict(ident)
        click.echo(f"evicted {entry.digest} ({format_bytes(entry.size)})")

    _run(go)


@cache.command()
@click.argument("ident", metavar="ID")
@pass_options
def pin(options: Options, ident: str) -> None:
    """Never evict ID (it stays until unpinned)."""

    def go() -> None:
        with options.store() as store:
            click.echo(f"pinned {store.pin(ident, True).digest}")

    _run(go)


@cache.command()
@click.argument("ident", metavar="ID")
@pass_options
def unpin(options: Options, ident: str) -> None:
    """Let ID be evicted again."""

    def go() -> None:
        with options.store() as store:
            click.echo(f"unpinned {store.pin(ident, False).digest}")

    _run(go)


@cache.command()
@click.option("--json", "as_json", is_flag=True, help="As JSON.")
@pass_options
def usage(options: Options, as_json: bool) -> None:
    """Used bytes, capacity and ratio."""

    def go() -> None:
        with options.store() as store:
            u = store.usage()
        if as_json:
            fields = {k: getattr(u, k) for k in ("used", "reserved", "capacity", "files")}
            click.echo(json.dumps({**fields, "ratio": u.ratio}))
        else:
            click.echo(describe(u))

    _run(go)


@cache.command()
@pass_options
def verify(options: Options) -> None:
    """Hash every cached file whole; damaged ones are removed (and fetched again when next asked for)."""

    def go() -> None:
        with options.store() as store:
            damaged = store.scrub()
        for digest in damaged:
            click.echo(f"damaged, removed: {digest}")
        if damaged:
            sys.exit(1)
        click.echo("all cached files are intact")

    _run(go)


def _since(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return datetime.datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither a Unix time nor an ISO 8601 date") from None


@cache.command()
@click.option("--since", callback=_since, metavar="T", help="Only entries added since T (Unix time or ISO date).")
@pass_options
def export(options: Options, since: float | None) -> None:
    """Print the cache's entries as versioned JSON, for another node's 'shoal cache import'."""

    def go() -> None:
        with options.store() as store:
            doc = cache_sync.export(store, since=since, node=store.index.get_meta("node") or "")
        json.dump(doc, sys.stdout, indent=1)
        sys.stdout.write("\n")

    _run(go)


@cache.command("import")
@click.argument("source", type=click.File("rb"), metavar="FILE")
@pass_options
def import_(options: Options, source: Any) -> None:
    """Record the entries of another node's export (FILE, or - for stdin) as known here; 'warm ID' fetches
    one. cloud-manager's dump (a JSON array) is read too: its files are known by SHA-256. All or nothing: a
    malformed document changes nothing."""

    def go() -> None:
        try:
            doc = json.load(source)
        except ValueError as exc:
            raise UsageError(f"cannot import: not JSON ({exc}); nothing was imported") from None
        with options.store() as store:
            count, added = cache_sync.import_document(store, doc)
        click.echo(f"imported {count} entries ({added} new) at {_when(time.time())}")

    _run(go)
