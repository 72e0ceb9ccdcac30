"""Task ids.

A URL task's id derives from the canonical URL plus an optional tag and digest, so every peer that asks for
the same thing lands in the same swarm. Canonical means: scheme and host lower-cased, default port dropped,
empty path made ``/``, fragment dropped. The query string is kept as-is: it often selects content.
"""

from __future__ import annotations

import hashlib
from urllib.parse import urlsplit, urlunsplit

from shoal.core.errors import UsageError

_DEFAULT_PORTS = {"http": 80, "https": 443}


def canonical_url(url: str) -> str:
    """Normalise an http(s) URL; raise UsageError when it is not one."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"malformed URL {url!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise UsageError(f"malformed URL {url!r}: only http:// and https:// are supported")
    host = (parts.hostname or "").lower()
    if not host:
        raise UsageError(f"malformed URL {url!r}: no host")
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    if parts.username or parts.password:
        # Credentials are a property of the request, not of the content; keep them out of the id.
        pass
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


def task_id_for_url(url: str, *, tag: str = "", digest: str = "") -> str:
    """The swarm id of a URL task: sha256 over the canonical URL, tag and digest, 40 hex characters."""
    material = "\n".join((canonical_url(url), tag, digest.lower()))
    return hashlib.sha256(material.encode()).hexdigest()[:40]


def is_task_id(text: str) -> bool:
    """Task ids are 40 lower-case hex characters (URL tasks) or 64 (content digests)."""
    return len(text) in (40, 64) and all(c in "0123456789abcdef" for c in text)
