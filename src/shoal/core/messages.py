"""The tracker's JSON API (version 1) as typed values, with validation of everything that comes in.

Every field a peer sends is checked here, so the tracker's handlers only ever see well-formed values; a
bad request becomes a ProtocolError naming the field, which the HTTP edge turns into a 400.

    POST /v1/tasks/{task_id}/announce   AnnounceRequest  -> AnnounceResponse
    GET  /v1/tasks/{task_id}/hashes?since=SEQ             -> HashesResponse
    GET  /v1/tasks/{task_id}                              -> task summary
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from shoal.core.errors import ProtocolError
from shoal.core.ids import PEER_SECRET_HEX, peer_id_matches
from shoal.core.manifest import HASH_SIZE, MAX_LENGTH, Manifest, OriginIdentity

EVENTS = ("started", "update", "completed", "stopped")
MAX_LEASES_PER_ANNOUNCE = 256
MAX_BAD_PEERS = 256
# \Z, not $: a $ also matches before a trailing newline, which would let "id\n" through.
PEER_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}\Z")
_LABEL = re.compile(r"^[A-Za-z0-9_.:-]{0,64}\Z")
_HEX_HASH = re.compile(rf"^[0-9a-f]{{{HASH_SIZE * 2}}}\Z")


def _get(data: Mapping[str, Any], name: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
    value = data.get(name, default)
    if value is None:
        return default
    # bool is an int in Python; a JSON true is not a port number.
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise ProtocolError(f"{name} must be {getattr(kind, '__name__', kind)}", field=name)
    if not isinstance(value, kind):
        raise ProtocolError(f"{name} has the wrong type", field=name)
    return value


def _nested(data: Mapping[str, Any], name: str, key: str, kind: type, default: Any = None) -> Any:
    """Like _get, for a member of the object ``name``: errors name the top-level field."""
    try:
        return _get(data, key, kind, default)
    except ProtocolError:
        raise ProtocolError(f"{name}.{key} has the wrong type", field=name) from None


def _is_index(key: object) -> bool:
    # str.isdigit() is also true for digits int() refuses, such as "\u00b2".
    return isinstance(key, str) and key.isascii() and key.isdigit()


def _index_list(data: Mapping[str, Any], name: str) -> list[int]:
    values = _get(data, name, list, [])
    if len(values) > 100_000 or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ProtocolError(f"{name} must be a list of piece indices", field=name)
    if any(v < 0 for v in values):
        raise ProtocolError(f"{name} holds a negative piece index", field=name)
    return list(values)


def parse_identity(raw: Any, name: str = "origin") -> OriginIdentity:
    if not isinstance(raw, dict):
        raise ProtocolError(f"{name} must be an object", field=name)
    length = _nested(raw, name, "length", int)
    if length is None or length < 0:
        raise ProtocolError(f"{name}.length must be a non-negative integer", field=name)
    if length > MAX_LENGTH:
        raise ProtocolError(f"{name}.length is over the largest file a task holds, {MAX_LENGTH} bytes", field=name)
    etag = _nested(raw, name, "etag", str, "")
    last_modified = _nested(raw, name, "last_modified", str, "")
    if len(etag) > 512 or len(last_modified) > 128:
        raise ProtocolError(f"{name} validators are too long", field=name)
    if not (etag.isprintable() and last_modified.isprintable()):
        raise ProtocolError(f"{name} validators hold control characters", field=name)
    return OriginIdentity(length, etag, last_modified)


def encode_piece_hashes(hashes: tuple[str, ...]) -> str:
    """Piece hashes on the wire: their bytes, concatenated, in base64 (a third of hex's size)."""
    return base64.b64encode(b"".join(bytes.fromhex(h) for h in hashes)).decode()


def decode_piece_hashes(text: str) -> tuple[str, ...]:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("piece_hashes is not base64", field="piece_hashes") from None
    if len(raw) % HASH_SIZE:
        raise ProtocolError(f"piece_hashes is not a whole number of {HASH_SIZE}-byte hashes", field="piece_hashes")
    return tuple(raw[i : i + HASH_SIZE].hex() for i in range(0, len(raw), HASH_SIZE))


@dataclass(frozen=True, slots=True)
class AnnounceRequest:
    peer_id: str
    url: str
    port: int
    secret: str = ""
    """The secret the peer id is derived from (core.ids.peer_id_for): proves the announce is the peer's."""
    event: str = "update"
    host: str = ""
    site: str = ""
    rack: str = ""
    generation: int = 0
    origin: OriginIdentity | None = None
    """What the peer saw at the origin (HEAD or a Range reply); creates or checks the task's manifest."""
    bitfield: str | None = None
    """Base64 bitfield of the verified pieces the peer holds (validated against the manifest later)."""
    done: Mapping[int, str] = field(default_factory=dict)
    """Pieces fetched from the origin under lease: index -> BLAKE3 hex of the piece."""
    released: tuple[int, ...] = ()
    """Leases the peer gives back unfetched."""
    fetching: tuple[int, ...] = ()
    """Pieces the peer is fetching from the origin right now, under leases it was granted. A tracker that
    has lost or let lapse those leases (restarted, or unreachable for longer than its peer TTL) grants each
    back to this peer when nobody holds the piece and no other peer holds a live lease on it."""
    bad_peers: tuple[str, ...] = ()
    """Peers that served this peer bytes failing verification."""
    want_leases: int = 0
    no_range: bool = False
    """The origin answered a Range request with the whole file."""
    piece_hashes: tuple[str, ...] = ()
    """Every piece's hash, in order: registers a content task's manifest (its id must commit to them)."""

    @classmethod
    def from_json(cls, data: Any) -> AnnounceRequest:
        if not isinstance(data, dict):
            raise ProtocolError("the body must be a JSON object")
        peer_id = _get(data, "peer_id", str, "")
        if not PEER_ID.match(peer_id):
            raise ProtocolError("peer_id must be 1-64 characters of [A-Za-z0-9_.-]", field="peer_id")
        secret = _get(data, "secret", str, "")
        if not peer_id_matches(peer_id, secret):
            raise ProtocolError(
                f"secret must be the {PEER_SECRET_HEX} hex characters peer_id is derived from", field="secret"
            )
        url = _get(data, "url", str, "")
        # isprintable() is False for control characters, NUL and lone surrogates, which no URL holds (and a
        # database would refuse: a lone surrogate cannot be encoded, PostgreSQL refuses NUL).
        if not url.startswith(("http://", "https://")) or len(url) > 8192 or not url.isprintable():
            raise ProtocolError("url must be an http(s) URL", field="url")
        port = _get(data, "port", int)
        if port is None or not 0 < port < 65536:
            raise ProtocolError("port must be 1-65535", field="port")
        event = _get(data, "event", str, "update")
        if event not in EVENTS:
            raise ProtocolError(f"event must be one of {', '.join(EVENTS)}", field="event")
        host = _get(data, "host", str, "")
        if len(host) > 255 or any(c.isspace() for c in host) or not host.isprintable():
            raise ProtocolError("host is malformed", field="host")
        site, rack = _get(data, "site", str, ""), _get(data, "rack", str, "")
        for label, value in (("site", site), ("rack", rack)):
            if not _LABEL.match(value):
                raise ProtocolError(f"{label} is up to 64 characters of [A-Za-z0-9_.:-]", field=label)
        generation = _get(data, "generation", int, 0)
        if generation < 0:
            raise ProtocolError("generation must not be negative", field="generation")
        origin_raw = data.get("origin")
        origin = None if origin_raw is None else parse_identity(origin_raw)
        bitfield = _get(data, "bitfield", str)
        done_raw = _get(data, "done", dict, {})
        done: dict[int, str] = {}
        for key, value in done_raw.items():
            if not _is_index(key) or not isinstance(value, str):
                raise ProtocolError("done maps piece indices to hashes", field="done")
            if not _HEX_HASH.match(value):
                raise ProtocolError(f"done[{key}] is not a {HASH_SIZE}-byte hex hash", field="done")
            done[int(key)] = value
        bad_peers = _get(data, "bad_peers", list, [])
        if len(bad_peers) > MAX_BAD_PEERS or not all(isinstance(p, str) and PEER_ID.match(p) for p in bad_peers):
            raise ProtocolError(f"bad_peers must be a list of at most {MAX_BAD_PEERS} peer ids", field="bad_peers")
        want = _get(data, "want_leases", int, 0)
        if not 0 <= want <= MAX_LEASES_PER_ANNOUNCE:
            raise ProtocolError(f"want_leases must be 0-{MAX_LEASES_PER_ANNOUNCE}", field="want_leases")
        return cls(
            peer_id=peer_id,
            url=url,
            port=port,
            event=event,
            host=host,
            site=site,
            rack=rack,
            generation=generation,
            origin=origin,
            bitfield=bitfield,
            done=done,
            released=tuple(_index_list(data, "released")),
            fetching=tuple(_index_list(data, "fetching")),
            bad_peers=tuple(bad_peers),
            want_leases=want,
            no_range=bool(_get(data, "no_range", bool, False)),
            secret=secret,
            piece_hashes=decode_piece_hashes(_get(data, "piece_hashes", str, "")),
        )

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["origin"] = None if self.origin is None else asdict(self.origin)
        out["done"] = {str(k): v for k, v in self.done.items()}
        out["released"] = list(self.released)
        out["fetching"] = list(self.fetching)
        out["bad_peers"] = list(self.bad_peers)
        if self.piece_hashes:
            out["piece_hashes"] = encode_piece_hashes(self.piece_hashes)
        else:
            del out["piece_hashes"]
        return out


@dataclass(frozen=True, slots=True)
class PeerAddress:
    peer_id: str
    host: str
    port: int
    site: str = ""
    rack: str = ""


def manifest_to_json(manifest: Manifest) -> dict[str, Any]:
    return {
        "length": manifest.length,
        "piece_length": manifest.piece_length,
        "etag": manifest.identity.etag,
        "last_modified": manifest.identity.last_modified,
    }


def manifest_from_json(raw: Any) -> Manifest:
    identity = parse_identity(raw, "manifest")
    piece_length = _nested(raw, "manifest", "piece_length", int)
    if piece_length is None or piece_length <= 0 or piece_length & (piece_length - 1):
        raise ProtocolError("manifest.piece_length must be a power of two", field="manifest")
    return Manifest(identity, piece_length)


@dataclass(frozen=True, slots=True)
class AnnounceResponse:
    generation: int
    manifest: Manifest | None
    restart: bool = False
    """The peer works on an older generation: the origin changed; drop all pieces and start again."""
    range_ok: bool = True
    peers: tuple[PeerAddress, ...] = ()
    leases: tuple[int, ...] = ()
    hash_seq: int = 0
    interval: float = 5.0
    rejected: tuple[int, ...] = ()
    """Pieces whose reported hash the tracker did not take: no live origin lease of the reporter's, or a
    hash other than the one it holds. The reporter keeps its piece but must not offer it to peers unless
    the tracker's hash (learned from ``/hashes``) matches."""

    def to_json(self) -> dict[str, Any]:
        return {
            "rejected": list(self.rejected),
            "generation": self.generation,
            "manifest": None if self.manifest is None else manifest_to_json(self.manifest),
            "restart": self.restart,
            "range_ok": self.range_ok,
            "peers": [asdict(p) for p in self.peers],
            "leases": list(self.leases),
            "hash_seq": self.hash_seq,
            "interval": self.interval,
        }

    @classmethod
    def from_json(cls, data: Any) -> AnnounceResponse:
        if not isinstance(data, dict):
            raise ProtocolError("announce reply is not an object")
        raw_manifest = data.get("manifest")
        peers = []
        for p in _get(data, "peers", list, []):
            if not isinstance(p, dict):
                raise ProtocolError("peers entry is not an object", field="peers")
            peers.append(
                PeerAddress(
                    peer_id=_get(p, "peer_id", str, ""),
                    host=_get(p, "host", str, ""),
                    port=_get(p, "port", int, 0),
                    site=_get(p, "site", str, ""),
                    rack=_get(p, "rack", str, ""),
                )
            )
        return cls(
            generation=_get(data, "generation", int, 0),
            manifest=None if raw_manifest is None else manifest_from_json(raw_manifest),
            restart=bool(_get(data, "restart", bool, False)),
            range_ok=bool(_get(data, "range_ok", bool, True)),
            peers=tuple(peers),
            leases=tuple(_index_list(data, "leases")),
            hash_seq=_get(data, "hash_seq", int, 0),
            interval=float(_get(data, "interval", (int, float), 5.0)),
            rejected=tuple(_index_list(data, "rejected")),
        )


@dataclass(frozen=True, slots=True)
class HashesResponse:
    generation: int
    seq: int
    hashes: Mapping[int, str]
    revoked: tuple[int, ...] = ()
    """Pieces whose hash the tracker dropped (a spot check caught its reporter): a copy taken from a peer
    must be fetched again, once a new hash comes."""

    def to_json(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "seq": self.seq,
            "hashes": {str(k): v for k, v in self.hashes.items()},
            "revoked": list(self.revoked),
        }

    @classmethod
    def from_json(cls, data: Any) -> HashesResponse:
        if not isinstance(data, dict):
            raise ProtocolError("hashes reply is not an object")
        raw = _get(data, "hashes", dict, {})
        hashes = {}
        for key, value in raw.items():
            if not (_is_index(key) and isinstance(value, str) and _HEX_HASH.match(value)):
                raise ProtocolError("hashes maps piece indices to hex hashes", field="hashes")
            hashes[int(key)] = value
        revoked = tuple(_index_list(data, "revoked"))
        return cls(_get(data, "generation", int, 0), _get(data, "seq", int, 0), hashes, revoked)
