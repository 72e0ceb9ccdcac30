"""The tracker's JSON API (version 1): each message once, as a msgspec struct that decodes and checks it.

Every field a peer sends is checked on decoding (core.structs.decode: the field types and their
``Meta`` constraints, then ``checked`` for the rules a type cannot state), so the tracker's handlers only
ever see well-formed values; a bad request becomes a ProtocolError naming the field, which the HTTP edge
turns into a 400. The same structs encode the replies and give the OpenAPI document (tracker.app.ROUTES).

    GET  /v1/health                                       -> Health
    POST /v1/tasks/{task_id}/announce   AnnounceRequest  -> AnnounceResponse
    GET  /v1/tasks/{task_id}/hashes?since=SEQ             -> HashesResponse
    GET  /v1/tasks/{task_id}                              -> TaskSummary
    GET  /v1/cluster                                      -> ClusterView
"""

from __future__ import annotations

import re
from typing import Annotated

import msgspec
from msgspec import Meta

from shoal.core.errors import ProtocolError
from shoal.core.ids import PEER_SECRET_HEX, peer_id_matches
from shoal.core.manifest import HASH_SIZE, MAX_LENGTH, Manifest, OriginIdentity

EVENTS = ("started", "update", "completed", "stopped")
MAX_LEASES_PER_ANNOUNCE = 256
MAX_BAD_PEERS = 256
MAX_INDICES = 100_000


def whole(body: str) -> str:
    """A pattern that ``body`` must match as a whole string. Python's ``$`` also matches before a final
    newline, which would let "id\\n" through; the lookahead refuses it, and ECMA-262 (the regexes of the
    JSON Schema) reads the pattern the same way."""
    return f"^{body}$(?!\\n)"


PEER_ID = re.compile(whole("[A-Za-z0-9_.-]{1,64}"))
# A pool's name (core.pool checks it); here with the other names of the wire, for the daemon's clients,
# which name pools but load none of the pool machinery.
POOL_NAME = re.compile(whole("[a-z0-9][a-z0-9._-]{0,63}"))
PeerId = Annotated[str, Meta(pattern=PEER_ID.pattern, description="1-64 of A-Z, a-z, 0-9, '_', '.', '-'")]
Label = Annotated[str, Meta(pattern=whole("[A-Za-z0-9_.:-]{0,64}"), description="a site or rack name")]
HexHash = Annotated[
    str,
    Meta(min_length=2 * HASH_SIZE, max_length=2 * HASH_SIZE, pattern=f"^[0-9a-f]{{{2 * HASH_SIZE}}}$"),
]
"""A piece's BLAKE3, in lower-case hex (the exact length keeps a final newline out)."""
ContentTaskId = Annotated[str, Meta(pattern="^([0-9a-f]{64})?$", description="a content task's id, or empty")]
Index = Annotated[int, Meta(ge=0)]
Indices = Annotated[tuple[Index, ...], Meta(max_length=MAX_INDICES)]
_SPACE = re.compile(r"\s")


def check_validators(identity: OriginIdentity, name: str) -> None:
    """The origin's validators are header values: no control characters (their lengths are the type's)."""
    if not (identity.etag.isprintable() and identity.last_modified.isprintable()):
        raise ProtocolError(f"{name} validators hold control characters", field=name)


ByteCount = Annotated[int, Meta(ge=0, le=1 << 53)]


class ScopeBytes(msgspec.Struct, frozen=True, omit_defaults=True):
    """Bytes a download took in, by where they came from: the origin, or a peer inside its rack, in another
    rack of its site, in another site (core.scope_leases draws the boundaries), or a peer where no boundary
    is known (either side has no rack label). Totals since the download started; the tracker sums them
    over a task's peers."""

    origin: ByteCount = 0
    rack: ByteCount = 0
    racks: ByteCount = 0
    sites: ByteCount = 0
    unlabelled: ByteCount = 0

    def __add__(self, other: ScopeBytes) -> ScopeBytes:
        pairs = zip(msgspec.structs.astuple(self), msgspec.structs.astuple(other), strict=True)
        return ScopeBytes(*(a + b for a, b in pairs))

    def since(self, earlier: ScopeBytes) -> ScopeBytes:
        """What was added since ``earlier`` (this one whole when a counter went back: a new download)."""
        pairs = list(zip(msgspec.structs.astuple(self), msgspec.structs.astuple(earlier), strict=True))
        if any(a < b for a, b in pairs):
            return self
        return ScopeBytes(*(a - b for a, b in pairs))


class AnnounceRequest(msgspec.Struct, frozen=True, omit_defaults=True):
    """A peer's announce: who it is, where it serves, what it saw at the origin, what it holds and did."""

    peer_id: PeerId
    url: Annotated[str, Meta(max_length=8192, pattern="^https?://")]
    port: Annotated[int, Meta(ge=1, le=65535)]
    secret: str = ""
    """The secret the peer id is derived from (core.ids.peer_id_for): proves the announce is the peer's."""
    event: Annotated[str, Meta(pattern=whole(f"({'|'.join(EVENTS)})"))] = "update"
    host: Annotated[str, Meta(max_length=255)] = ""
    site: Label = ""
    rack: Label = ""
    generation: Index = 0
    origin: OriginIdentity | None = None
    """What the peer saw at the origin (HEAD or a Range reply); creates or checks the task's manifest."""
    bitfield: str | None = None
    """Base64 bitfield of the verified pieces the peer holds (validated against the manifest later)."""
    done: dict[Index, HexHash] = msgspec.field(default_factory=dict)
    """Pieces fetched from the origin under lease: index -> BLAKE3 hex of the piece."""
    released: Indices = ()
    """Leases the peer gives back unfetched."""
    fetching: Indices = ()
    """Pieces the peer is fetching from the origin right now, under leases it was granted. A tracker that
    has lost or let lapse those leases (restarted, or unreachable for longer than its peer TTL) grants each
    back to this peer when nobody holds the piece and no other peer holds a live lease on it."""
    bad_peers: Annotated[tuple[PeerId, ...], Meta(max_length=MAX_BAD_PEERS)] = ()
    """Peers that served this peer bytes failing verification."""
    want_leases: Annotated[int, Meta(ge=0, le=MAX_LEASES_PER_ANNOUNCE)] = 0
    want_crossings: Annotated[int, Meta(ge=0, le=MAX_LEASES_PER_ANNOUNCE)] = 0
    """Scope leases wanted: pieces this peer needs that only peers across its rack's (or site's) boundary
    hold (core.scope_leases)."""
    no_range: bool = False
    """The origin answered a Range request with the whole file."""
    piece_hash_bytes: bytes = msgspec.field(default=b"", name="piece_hashes")
    """Every piece's hash, in order, concatenated (base64 on the wire: a third of hex's size): registers a
    content task's manifest (its id must commit to them)."""
    content_task: ContentTaskId = ""
    """A URL task's file as a content task: a peer whose file matched the task's digest vouches for the
    content task it registered (core.content_alias)."""
    received: ScopeBytes | None = None
    """What this peer's download took in so far, by scope (for the operator's views only)."""

    @property
    def piece_hashes(self) -> tuple[str, ...]:
        raw = self.piece_hash_bytes
        return tuple(raw[i : i + HASH_SIZE].hex() for i in range(0, len(raw), HASH_SIZE))

    def checked(self) -> AnnounceRequest:
        if not peer_id_matches(self.peer_id, self.secret):
            raise ProtocolError(
                f"secret must be the {PEER_SECRET_HEX} hex characters peer_id is derived from", field="secret"
            )
        # isprintable() is False for control characters and NUL, which no URL holds (and PostgreSQL refuses).
        if not self.url.isprintable():
            raise ProtocolError("url must be an http(s) URL", field="url")
        if _SPACE.search(self.host) or not self.host.isprintable():
            raise ProtocolError("host is malformed", field="host")
        if self.origin is not None:
            check_validators(self.origin, "origin")
        if len(self.piece_hash_bytes) % HASH_SIZE:
            raise ProtocolError(f"piece_hashes is not a whole number of {HASH_SIZE}-byte hashes", field="piece_hashes")
        return self


def piece_hash_bytes(hashes: tuple[str, ...]) -> bytes:
    """Hex piece hashes as AnnounceRequest.piece_hash_bytes holds them."""
    return b"".join(bytes.fromhex(h) for h in hashes)


class PeerAddress(msgspec.Struct, frozen=True):
    peer_id: str
    host: str
    port: int
    site: str = ""
    rack: str = ""


class ManifestMessage(msgspec.Struct, frozen=True):
    """A task's manifest as the tracker sends it: its origin identity's fields and its piece length."""

    length: Annotated[int, Meta(ge=0, le=MAX_LENGTH)]
    piece_length: Annotated[int, Meta(gt=0, description="a power of two")]
    etag: Annotated[str, Meta(max_length=512)] = ""
    last_modified: Annotated[str, Meta(max_length=128)] = ""

    @classmethod
    def of(cls, manifest: Manifest | None) -> ManifestMessage | None:
        if manifest is None:
            return None
        identity = manifest.identity
        return cls(identity.length, manifest.piece_length, identity.etag, identity.last_modified)

    def to_manifest(self) -> Manifest:
        return Manifest(OriginIdentity(self.length, self.etag, self.last_modified), self.piece_length)

    def checked(self) -> ManifestMessage:
        if self.piece_length & (self.piece_length - 1):
            raise ProtocolError("manifest.piece_length must be a power of two", field="manifest")
        check_validators(self.to_manifest().identity, "manifest")
        return self


class AnnounceResponse(msgspec.Struct, frozen=True):
    generation: int = 0
    manifest_message: ManifestMessage | None = msgspec.field(default=None, name="manifest")
    restart: bool = False
    """The peer works on an older generation: the origin changed; drop all pieces and start again."""
    range_ok: bool = True
    peers: tuple[PeerAddress, ...] = ()
    leases: Indices = ()
    hash_seq: int = 0
    interval: float = 5.0
    rejected: Indices = ()
    """Pieces whose reported hash the tracker did not take: no live origin lease of the reporter's, or a
    hash other than the one it holds. The reporter keeps its piece but must not offer it to peers unless
    the tracker's hash (learned from ``/hashes``) matches."""
    rack_leases: Indices = ()
    """The pieces this peer may fetch from another rack: one peer of a rack fetches each (core.scope_leases)."""
    site_leases: Indices = ()
    """The pieces this peer may fetch from another site (it holds their rack leases too)."""
    content_task: ContentTaskId = ""
    """To a peer joining a URL task (``started``): the content task peers vouched for as its file, a hint
    that a peer with a digest to check the file against may follow (core.content_alias)."""
    ticket: Annotated[str, Meta(max_length=512)] = ""
    """With a fleet token: the ticket admitting this peer to the task for a few intervals, which other
    peers' piece servers ask for (core.tickets); renewed by every announce. Empty without one."""
    owner: Annotated[str, Meta(max_length=2048)] = ""
    """The base URL of the tracker that decides this task, when another member of its cluster forwarded the
    announce there: the peer may ask it directly about the task from now on (core.owner_hint). Empty when
    the tracker asked decided the announce itself."""

    @property
    def manifest(self) -> Manifest | None:
        return None if self.manifest_message is None else self.manifest_message.to_manifest()

    def checked(self) -> AnnounceResponse:
        if self.manifest_message is not None:
            self.manifest_message.checked()
        return self


class HashesResponse(msgspec.Struct, frozen=True):
    generation: int = 0
    seq: int = 0
    hashes: dict[Index, HexHash] = msgspec.field(default_factory=dict)
    revoked: Indices = ()
    """Pieces whose hash the tracker dropped (a spot check caught its reporter): a copy taken from a peer
    must be fetched again, once a new hash comes."""


class PeerSummary(msgspec.Struct, frozen=True):
    """A live peer of a task, as the task's summary lists it."""

    peer_id: str
    host: str
    port: int
    site: str
    rack: str
    pieces: int
    bad: bool
    accusers: int
    last_seen: float


class TaskSummary(msgspec.Struct, frozen=True):
    """What the tracker knows of a task: its manifest (None until known), hashes, leases and live peers."""

    task_id: str
    url: str
    generation: int
    length: int | None
    piece_length: int | None
    pieces: int | None
    etag: str
    last_modified: str
    range_ok: bool
    hashed_pieces: int
    rejected_reports: int
    refused_origins: int
    leases: int
    peers: tuple[PeerSummary, ...]
    content_task: ContentTaskId = ""
    """A URL task's content task, the one most peers vouched for (core.content_alias); "" when none."""
    received: ScopeBytes = ScopeBytes()
    """What the task's peers took in by scope, summed over every peer heard of since the tracker started
    (its soft state: not kept across a restart)."""


class ClusterMember(msgspec.Struct, frozen=True):
    """A tracker process sharing the database (core.ownership)."""

    tracker_id: str
    url: str
    active_from: float
    expires: float
    live: bool
    load: float = 0.0
    """Requests it decided a second over its latest balancing round (core.balance)."""
    placed: int = 0
    """Tasks placed on it by load (core.ownership, "Placements") as this tracker last read them."""


class ClusterView(msgspec.Struct, frozen=True):
    """The trackers sharing this one's database, as it last read them; no members on SQLite (one process,
    which decides every task: ``deciding`` is true)."""

    tracker_id: str
    members: tuple[ClusterMember, ...]
    deciding: bool = False
    """Whether this tracker decides the announces of the tasks it owns now: its own row is in force and it
    has waited out its join (core.ownership). A member the others count live may not decide yet; the
    announces of its tasks meanwhile get a 503 that asks the peer to announce again."""


class Health(msgspec.Struct, frozen=True):
    ok: bool
    api: int


class SwarmAdmission(msgspec.Struct, frozen=True):
    """Whether a private tracker admitted a host to a BitTorrent swarm (core.bt_admission): a wire seeder's
    question before it answers that host's handshake."""

    admitted: bool
    until: float | None = None
    """Until when (the tracker's clock, seconds since the epoch) the admission holds; None when not admitted."""
    owner: Annotated[str, Meta(max_length=2048)] = ""
    """The base URL of the tracker that decides the swarm, when another member of its cluster forwarded the
    question there: the seeder may ask it directly from now on (core.owner_hint). Empty otherwise."""
