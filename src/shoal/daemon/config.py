"""Configuration of ``shoal daemon``: every field documented, every default here, and the default places of
the cache and the control socket (which ``shoal get`` and ``shoal cache`` share, so this module stays
light: no aiohttp, no SQL)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from shoal.core.errors import UsageError
from shoal.core.messages import POOL_NAME
from shoal.http.credentials import Credentials
from shoal.peer.config import DEFAULT_LISTEN_HOST


def default_cache_dir() -> Path:
    """``$SHOAL_CACHE_DIR``; else /var/cache/shoal for root, ``$XDG_CACHE_HOME/shoal`` (~/.cache/shoal)
    for other users."""
    if env := os.environ.get("SHOAL_CACHE_DIR"):
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/cache/shoal")
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "shoal"


def default_socket() -> Path:
    """``$SHOAL_DAEMON_SOCKET``; else /run/shoal/daemon.sock for root, ``$XDG_RUNTIME_DIR/shoal/daemon.sock``
    (or /tmp/shoal-UID/daemon.sock) for other users."""
    if env := os.environ.get("SHOAL_DAEMON_SOCKET"):
        return Path(env)
    if os.geteuid() == 0:
        return Path("/run/shoal/daemon.sock")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) / "shoal" if runtime else Path(f"/tmp/shoal-{os.geteuid()}")
    return base / "daemon.sock"


@dataclass(frozen=True, slots=True)
class PoolSpec:
    """A pool to join: ``--pool NAME[:TOKEN]`` (a private pool needs its token)."""

    name: str
    token: str | None = None

    @classmethod
    def parse(cls, text: str) -> PoolSpec:
        name, sep, token = text.partition(":")
        if not POOL_NAME.match(name) or (sep and not token):
            raise UsageError(f"--pool takes NAME or NAME:TOKEN, not {text!r}")
        return cls(name, token or None)


def parse_pool_tokens(text: str, source: str) -> dict[str, str]:
    """A pool token file (``--pool-token-file``): one ``NAME TOKEN`` a line; blank lines and lines starting
    with ``#`` are skipped. A UsageError names the first bad line of ``source``."""
    tokens: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) != 2 or not POOL_NAME.match(fields[0]) or not (fields[1].isascii() and fields[1].isprintable()):
            raise UsageError(f"{source}, line {number}: a pool token file holds NAME TOKEN lines")
        if fields[0] in tokens:
            raise UsageError(f"{source}, line {number}: pool {fields[0]!r} is named twice")
        tokens[fields[0]] = fields[1]
    return tokens


def with_tokens(pools: Iterable[PoolSpec], tokens: Mapping[str, str], default: str | None) -> tuple[PoolSpec, ...]:
    """``pools`` with a token each that has none of its own: its line of a pool token file (``tokens``), else
    ``default`` ($SHOAL_POOL_TOKEN; a public pool ignores a token it does not know)."""
    return tuple(
        spec if spec.token else PoolSpec(spec.name, tokens.get(spec.name) or default or None) for spec in pools
    )


def index_path(cache_dir: Path) -> Path:
    return cache_dir / "index.sqlite"


# No slots: the class attributes must stay readable as the defaults (the CLI shows them).
@dataclass(frozen=True)
class DaemonConfig:
    cache_dir: Path
    """Where the cache lives: ``index.sqlite``, ``objects/`` and ``staging/``. Destinations on the same
    filesystem get hard links instead of copies."""
    capacity: int | None = None
    """Bytes the cache may hold, downloads in progress included. None: the capacity the cache directory
    already has (kept in its index), or shoal.core.eviction.DEFAULT_CAPACITY for a new cache. Another
    value replaces the stored capacity, with a warning."""
    tracker: str | None = None
    """Tracker base URL; None fetches straight from origins and seeds nothing."""
    site: str = ""
    """Locality label announced to the tracker."""
    rack: str = ""
    """Locality label announced to the tracker."""
    listen_host: str = DEFAULT_LISTEN_HOST
    """Address of the piece server other peers fetch from; a specific address is also what they are told."""
    listen_port: int = 0
    """Port of the piece server; 0 picks a free one."""
    socket: Path = Path("daemon.sock")
    """The control socket (mode 0600: only this user may talk to the daemon)."""
    download_rate: int | None = None
    """Bytes per second for each download; None for no limit."""
    upload_rate: int | None = None
    """Bytes per second for serving peers, all tasks together; None for no limit."""
    max_uploads: int = 32
    """Concurrent piece uploads before the piece server answers 503."""
    fallback: bool = True
    """Fetch straight from the origin when the tracker cannot be reached (a daemon must keep working)."""
    share_authenticated: bool = False
    """Share a file fetched with origin headers (credentials) with the peers holding the same headers, and
    only with them (core.ids.headers_tag). Off: such a file comes from the origin only and is served to
    nobody; a request may still ask to share its own (GetRequest.share)."""
    ignore_qp: tuple[str, ...] = ()
    """Query parameters (names or shell-style patterns) left out of the identity of every task the daemon
    fetches, a request's own added (core.ids.identity_url): differently signed URLs of one file share one
    swarm and one cache entry. Every host of a swarm must name the same ones."""
    scrub_interval: float = 86400.0
    """Seconds between full re-hashes of every cached file (0: never), for damage a stat does not show."""
    reseed_seconds: float = 5.0
    """Retry delay when the tracker cannot be reached while seeding."""
    pools: tuple[PoolSpec, ...] = ()
    """Pools this daemon is a member of (on ``tracker``): it fetches what is pushed to them."""
    pool_dest: tuple[Path, ...] = ()
    """Directories under which a push's ``--dest`` may place files; a push elsewhere fails on this member
    (whoever may push to a pool must not be able to write anywhere the daemon can)."""
    member_name: str = ""
    """How this daemon is named in its pools' member lists; empty: the host name."""
    credentials: Credentials = field(default_factory=Credentials)
    """The fleet token and TLS (shoal.http.credentials; ``--fleet-token-file``, ``--tls-cert``...): sent to
    the tracker, tickets to peers, and what the piece server asks of peers. None given: a trusted LAN."""
