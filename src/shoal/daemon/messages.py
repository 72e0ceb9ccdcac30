"""The messages of the daemon's control API (shoal.daemon.control), one msgspec struct each.

The daemon decodes requests and encodes replies with these structs, its client (shoal.daemon.client)
encodes requests and decodes replies with them, and the OpenAPI document (``control.ROUTES``) is
generated from them, so the three cannot disagree. Rules, and why:

- The field names are the wire's since the API began; a request's unknown fields are ignored, so a newer
  ``shoal get`` can add one without breaking an older daemon.
- ``get`` and ``warm`` answer a stream of lines (newline-delimited JSON), each an object with one field:
  ``progress`` while the swarm works, then ``result`` or ``error`` last. A line is one struct whose unset
  fields are left out (``omit_defaults``), so each line carries exactly the one it is.
- ``shoal get`` imports this module for a cache hit: it imports msgspec and the core only (no aiohttp).
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from shoal.core.errors import ProtocolError, UsageError
from shoal.core.ids import parse_ignored_params
from shoal.core.messages import POOL_NAME
from shoal.core.whole_file import DIGEST_ALGORITHMS, WHOLE_DIGEST, Digest

# -- requests ---------------------------------------------------------------------------------------------


class GetRequest(msgspec.Struct, frozen=True):
    """Place ``url``'s file at ``name`` inside ``dest_dir``, fetching it into the cache if needed."""

    url: str
    dest_dir: Annotated[str, Meta(description="an existing directory: absolute, normalised")]
    name: Annotated[str, Meta(description="a plain file name inside dest_dir: no slash, not . or ..")]
    headers: dict[str, str] | None = None
    """Headers for the origin (None: none). With any, the file is private to them (core.ids.headers_tag)."""
    digest: Digest | None = None
    share: bool = False
    """With headers: share the file with the peers holding the same headers (the daemon's
    ``--share-authenticated`` shares every such file); else it is fetched from the origin only."""
    ignore_qp: Annotated[
        list[Annotated[str, Meta(max_length=256)]],
        Meta(max_length=64, description="query parameters (or patterns: X-Amz-*) left out of the swarm's identity"),
    ] = []
    """``shoal get --ignore-qp``: added to the daemon's own list."""
    no_origin: bool = False
    """``shoal get --no-origin``: peers only; the origin is never asked (a cache hit is still one)."""

    def checked(self) -> GetRequest:
        # Whole digests only: it is what the placed file must match, not a cache id to look up, so a
        # prefix (which cache ids accept) would weaken the check.
        if self.digest is not None and not WHOLE_DIGEST.match(self.digest):
            known = ", ".join(f"{a}: {n}" for a, n in DIGEST_ALGORITHMS.items())
            raise ProtocolError(f"digest must be ALGORITHM:HEX, whole ({known} hex digits)", field="digest")
        try:
            parse_ignored_params(self.ignore_qp)
        except UsageError as exc:
            raise ProtocolError(str(exc), field="ignore_qp") from None
        return self


class JoinPool(msgspec.Struct, frozen=True):
    """Join a pool of the daemon's tracker until the daemon stops (``shoal pool join``)."""

    name: Annotated[str, Meta(pattern=POOL_NAME.pattern, description="1-64 of a-z, 0-9, '.', '_', '-'")]
    token: Annotated[str, Meta(min_length=1, max_length=4096)] | None = None
    """A private pool's token (the pool's, or the operator's)."""


class WarmRequest(msgspec.Struct, frozen=True):
    """Fetch into the cache (and seed), placing nothing."""

    target: Annotated[str, Meta(min_length=1, description="a URL or a cache id")]


# -- replies ----------------------------------------------------------------------------------------------


class FetchProgress(msgspec.Struct, frozen=True):
    """A download's counters (core.download_values.Stats), sent every 0.2 s while the swarm works."""

    total: int = 0
    done: int = 0
    from_origin: int = 0
    from_peers: int = 0
    peers: int = 0


class FetchFailure(msgspec.Struct, frozen=True):
    """Why a get or warm failed: the error's words, its class and the exit code ``shoal get`` ends with."""

    message: str
    exit_code: int
    kind: str = ""


class Placed(msgspec.Struct, frozen=True):
    """A get's result: the file is at ``path``."""

    path: str
    size: int
    digest: str
    sha256: str | None
    """None while the SHA-256 is still being computed (the daemon completes it in the background)."""
    hit: bool
    """Answered from the cache, with no download."""
    linked: bool
    """A hard link to the cache's object (else a copy)."""
    bytes_from_origin: int
    bytes_from_peers: int
    seconds: float


class EntryView(msgspec.Struct, frozen=True):
    """A cache entry, as ``shoal cache info`` shows it (storage.cache_index.CacheEntry.to_json)."""

    id: str
    sha256: str | None
    name: str
    size: int
    added: float
    last_access: float
    pinned: bool
    cached: bool
    in_use: bool
    sources: list[str]
    peers: list[str]


class Warmed(msgspec.Struct, frozen=True):
    entry: EntryView


class GetLine(msgspec.Struct, frozen=True, omit_defaults=True):
    """One line of the reply to ``POST /v1/get``: exactly one of its fields."""

    progress: FetchProgress | None = None
    result: Placed | None = None
    error: FetchFailure | None = None


class WarmLine(msgspec.Struct, frozen=True, omit_defaults=True):
    """One line of the reply to ``POST /v1/warm``: exactly one of its fields."""

    progress: FetchProgress | None = None
    result: Warmed | None = None
    error: FetchFailure | None = None


class PoolMembership(msgspec.Struct, frozen=True):
    """The reply to a join or a leave: the pool, and whether that changed anything."""

    pool: str
    changed: bool
    """False for a join of a pool the daemon was a member of already (with the same token)."""
    pools: list[str]
    """Every pool the daemon is a member of now."""


class DaemonStatus(msgspec.Struct, frozen=True):
    """What the daemon serves and holds."""

    cache_dir: str
    node: str
    """Its piece server's base URL."""
    peer_port: int
    used: int
    reserved: int
    capacity: int
    files: int
    seeding: list[str]
    """The swarm tasks it announces."""
    uploading: int
    """Tasks whose pieces it serves now."""
    pools: list[str] = []
    """The pools it is a member of (``--pool``, ``shoal pool join``)."""
