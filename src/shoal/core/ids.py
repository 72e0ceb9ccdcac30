"""Task ids.

A URL task's id derives from the canonical URL plus an optional tag and digest, so every peer that asks for
the same thing lands in the same swarm. Canonical means: scheme and host lower-cased, default port dropped,
empty path made ``/``, fragment dropped. The query string is kept as-is: it often selects content, unless
the user names parameters that do not (``--ignore-qp``: :func:`identity_url`).
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import unquote_plus, urlsplit, urlunsplit

import blake3

from shoal.core.errors import UsageError
from shoal.core.redact import redact_url

_DEFAULT_PORTS = {"http": 80, "https": 443}


def canonical_url(url: str) -> str:
    """Normalise an http(s) URL; raise UsageError when it is not one."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"malformed URL {redact_url(url)!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise UsageError(f"malformed URL {redact_url(url)!r}: only http:// and https:// are supported")
    host = (parts.hostname or "").lower()
    if not host:
        raise UsageError(f"malformed URL {redact_url(url)!r}: no host")
    if ":" in host:
        host = f"[{host}]"
    # The user-info (credentials) is left out: it belongs to a request, not to the content it names.
    netloc = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


def parse_ignored_params(values: Iterable[str]) -> tuple[str, ...]:
    """``--ignore-qp`` values (repeated, or comma-separated) as the names or shell-style patterns
    (``X-Amz-*``) of query parameters to leave out of a task's identity; raises UsageError on a bad one."""
    names: list[str] = []
    for value in values:
        for name in value.split(","):
            name = name.strip()
            if not name or any(c in name for c in "&=#? \t"):
                raise UsageError(f"--ignore-qp takes query parameter names (or patterns like X-Amz-*), not {name!r}")
            names.append(name)
    return tuple(dict.fromkeys(names))


def identity_url(url: str, ignored: Sequence[str] = ()) -> str:
    """The URL a task's identity is taken from: ``url`` without the query parameters whose names match
    ``ignored`` (case-insensitively; ``*`` and ``?`` as in shell patterns). Hosts fetching one file by
    differently signed URLs (S3 or CDN signatures, expiry times, tokens) then land in one swarm, while each
    still fetches its own URL from the origin. The other parameters are kept verbatim, in order."""
    if not ignored:
        return url
    head, sep, query = url.partition("?")
    if not sep:
        return url
    query, hash_sign, fragment = query.partition("#")
    patterns = [p.lower() for p in ignored]
    kept = [
        item
        for item in query.split("&")
        if not any(fnmatch.fnmatchcase(unquote_plus(item.partition("=")[0]).lower(), p) for p in patterns)
    ]
    rest = "&".join(kept)
    return f"{head}{'?' if rest else ''}{rest}{hash_sign}{fragment}"


def task_id_for_url(url: str, *, tag: str = "", digest: str = "") -> str:
    """The swarm id of a URL task: sha256 over the canonical URL, tag and digest, 40 hex characters."""
    material = "\n".join((canonical_url(url), tag, digest.lower()))
    return hashlib.sha256(material.encode()).hexdigest()[:40]


def headers_tag(headers: Mapping[str, str]) -> str:
    """The task tag of a download made with origin ``headers`` (credentials: Authorization, a cookie, a
    token in any header): "" for none, else a hash of every header, names lower-cased, in order. Content
    behind credentials is private to them: shared at all (``--share-authenticated``), it is shared only
    under the task this tag keys, which a peer that does not hold the same headers cannot even name.
    ``Accept-Encoding: identity``, which Shoal sends itself, is not part of it."""
    lines = sorted(f"{name.lower()}: {value}" for name, value in headers.items() if name.lower() != "accept-encoding")
    if not lines:
        return ""
    return "headers:" + hashlib.sha256("\n".join(["shoal-origin-headers", *lines]).encode()).hexdigest()


def is_task_id(text: str) -> bool:
    """Task ids are 40 lower-case hex characters (URL tasks) or 64 (content tasks: a manifest's BLAKE3)."""
    return len(text) in (40, 64) and all(c in "0123456789abcdef" for c in text)


def is_content_task(task_id: str) -> bool:
    """A content task's id is 64 hex characters (:func:`content_task_id`); a URL task's is 40."""
    return len(task_id) == 64


# -- peer identities -------------------------------------------------------------------------------------
#
# A peer's id is self-certifying: it is derived from a secret only the peer knows, and every announce
# carries that secret. The tracker recomputes the id from the secret, so nobody can announce (``stopped``
# included) under an id that is not theirs, even though ids are public (hand-outs, ``GET /v1/tasks/{id}``).
# The tracker stores nothing for this, so the binding survives a tracker restart and holds on any tracker
# process. Secrets travel only to the tracker, never to other peers.

PEER_SECRET_HEX = 32
"""A secret is 16 random bytes, as lower-case hex."""
_PEER_DIGEST_HEX = 24
_LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz")


def peer_id_for(secret: str, label: str = "") -> str:
    """The id a peer holding ``secret`` announces under: ``label-`` (optional, lower-case letters, for the
    logs: ``daemon``, ``seeder``) and 24 hex characters of the secret's SHA-256."""
    if label and not (len(label) <= 16 and set(label) <= _LABEL_CHARS):
        raise ValueError(f"a peer label is 1-16 lower-case letters, not {label!r}")
    digest = hashlib.sha256(b"shoal-peer\n" + secret.encode()).hexdigest()[:_PEER_DIGEST_HEX]
    return f"{label}-{digest}" if label else digest


def is_peer_secret(text: str) -> bool:
    return len(text) == PEER_SECRET_HEX and all(c in "0123456789abcdef" for c in text)


def peer_id_matches(peer_id: str, secret: str) -> bool:
    """True when ``peer_id`` is the id ``secret`` names (with whatever label the peer chose)."""
    label, _, _ = peer_id.rpartition("-")
    try:
        return is_peer_secret(secret) and peer_id_for(secret, label) == peer_id
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    """A peer's id and the secret that proves it (see above). ``secret`` comes from the caller's random
    source (``secrets.token_hex(16)``): the core reads no randomness."""

    peer_id: str
    secret: str

    @classmethod
    def from_secret(cls, secret: str, label: str = "") -> PeerIdentity:
        if not is_peer_secret(secret):
            raise ValueError(f"a peer secret is {PEER_SECRET_HEX} lower-case hex characters")
        return cls(peer_id_for(secret, label), secret)


# -- content tasks -----------------------------------------------------------------------------------------


def content_task_id(length: int, piece_length: int, piece_hashes: Sequence[str]) -> str:
    """A content task's id: the BLAKE3 of its manifest (length, piece length and every piece's BLAKE3, in
    order), as BitTorrent's info-hash is the SHA-1 of the info dictionary that holds the piece hashes.

    The id commits to every piece, so a peer that knows only the id can check a piece list the tracker
    (or anyone) hands it, and then every piece, trusting nobody."""
    h = blake3.blake3(f"shoal-manifest-v1\n{length}\n{piece_length}\n".encode())
    for digest in piece_hashes:
        h.update(bytes.fromhex(digest))
    return h.hexdigest()
