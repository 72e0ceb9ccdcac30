"""Talking to the origin: learn its identity, and open Range requests for runs of pieces.

A reply is checked against the manifest before a byte of it is used: a 206 must carry the asked range of a
file of the known length, and the same ETag and Last-Modified when the manifest has them; a 200 means the
origin ignores Range. Anything else is an OriginChanged (another version of the file) or an OriginError.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp

from shoal.core.digests import PublishedDigest, published_digest
from shoal.core.errors import OriginChanged, OriginError, ProtocolError
from shoal.core.ids import is_task_id
from shoal.core.manifest import Manifest, OriginIdentity
from shoal.core.ranges import parse_content_range, range_header
from shoal.http.credentials import Credentials

log = logging.getLogger("shoal.peer")
TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=30)


def identity_of(resp: aiohttp.ClientResponse, length: int) -> OriginIdentity:
    etag = resp.headers.get("ETag", "")
    # A strong ETag alone names one version of the content (RFC 9110 8.8.3); Last-Modified then adds only
    # false alarms (a file touched, or copied to a second origin, is the same content).
    last_modified = "" if etag and not etag.startswith("W/") else resp.headers.get("Last-Modified", "")
    return OriginIdentity(length, etag, last_modified)


def _task_hint(resp: aiohttp.ClientResponse) -> str | None:
    """A Shoal seeder names the content task of the file it serves (``Shoal-Task``): a BLAKE3 digest."""
    hint = resp.headers.get("Shoal-Task", "")
    return hint if len(hint) == 64 and is_task_id(hint) else None


DIGEST_HEADERS = ("repr-digest", "content-digest", "digest", "x-amz-checksum-sha256", "content-md5")


def _published(resp: aiohttp.ClientResponse) -> PublishedDigest | None:
    """The whole-file digest the reply's headers publish (:mod:`shoal.core.digests`), if any."""
    fields = {name: resp.headers.getall(name, []) for name in DIGEST_HEADERS}
    found = published_digest(fields, partial=resp.status == 206)
    for reason in found.skipped:
        log.debug("origin digest header skipped: %s", reason)
    return found.best


@dataclass(frozen=True, slots=True)
class Probe:
    identity: OriginIdentity
    ranges: bool
    task_id: str | None = None
    """The content task the origin names for this file, if it is a Shoal seeder."""
    digest: PublishedDigest | None = None
    """The whole-file digest the origin publishes, checked once the file is complete."""


class Origin:
    """The origin of one URL. ``fleet``: the origin is a node of this fleet (another daemon's
    ``/v1/content/{id}``), so every request carries the fleet's request credential, made afresh, and goes
    over the fleet's TLS; an origin outside the fleet never sees either."""

    def __init__(
        self,
        url: str,
        session: aiohttp.ClientSession,
        headers: Mapping[str, str],
        *,
        fleet: Credentials | None = None,
    ) -> None:
        self.url = url
        self.session = session
        self.headers = dict(headers)
        self.fleet = fleet

    def _headers(self, extra: Mapping[str, str]) -> dict[str, str]:
        fleet = self.fleet.tracker_headers(time.time()) if self.fleet is not None else {}
        return {**self.headers, **fleet, **extra}

    def _ssl(self) -> ssl.SSLContext | bool:
        """aiohttp's ``ssl=``: the fleet's CA (and this node's certificate) for a node of the fleet, as a
        peer is asked (shoal.http.credentials); the system's for any other origin."""
        if self.fleet is not None and self.fleet.peer_ssl is not None:
            return self.fleet.peer_ssl
        return True

    def _error(self, message: str, status: int | None = None) -> OriginError:
        return OriginError(f"{message} ({self.url})", url=self.url, status=status)

    async def probe(self) -> Probe:
        """One GET of the first byte: tells the length, the validators and whether Range works."""
        headers = self._headers({"Range": "bytes=0-0"})
        try:
            async with self.session.get(self.url, headers=headers, timeout=TIMEOUT, ssl=self._ssl()) as resp:
                if resp.status == 206:
                    try:
                        _, _, total = parse_content_range(resp.headers.get("Content-Range"))
                    except ProtocolError as exc:
                        raise self._error(f"origin sent {exc}") from None
                    if total is None:
                        raise self._error("origin did not say the file's length")
                    return Probe(identity_of(resp, total), True, _task_hint(resp), _published(resp))
                if resp.status == 416:
                    # An empty file has no first byte to ask for; its origin says so (RFC 9110 15.5.17:
                    # "Content-Range: bytes */0"). A 416 that names another length is the origin's bug.
                    if resp.headers.get("Content-Range", "").replace(" ", "") != "bytes*/0":
                        raise self._error("origin refused the range bytes=0-0 of a file that is not empty", 416)
                    return Probe(identity_of(resp, 0), True, _task_hint(resp))
                if resp.status == 200:
                    if resp.content_length is None:
                        raise self._error("origin sent neither Content-Range nor Content-Length")
                    return Probe(identity_of(resp, resp.content_length), False, _task_hint(resp), _published(resp))
                raise self._error(f"origin answered HTTP {resp.status}", resp.status)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise self._error(f"cannot reach the origin: {exc or type(exc).__name__}") from exc

    def check(self, resp: aiohttp.ClientResponse, manifest: Manifest, start: int, end: int) -> bool:
        """Validate a reply to a Range request for [start, end). True: ranged (206); False: whole file."""
        expected = manifest.identity
        if resp.status == 206:
            try:
                got_start, got_end, total = parse_content_range(resp.headers.get("Content-Range"))
            except ProtocolError as exc:
                raise self._error(f"origin sent {exc}") from None
            length = expected.length if total is None else total
            seen = identity_of(resp, length)
            if not seen.same_version(expected):
                raise OriginChanged(f"the origin's file changed ({self.url})", url=self.url)
            if (got_start, got_end) != (start, end):
                raise self._error(f"origin sent bytes {got_start}-{got_end} for {start}-{end}")
            return True
        if resp.status == 200:
            seen = identity_of(resp, resp.content_length if resp.content_length is not None else -1)
            if not seen.same_version(expected):
                raise OriginChanged(f"the origin's file changed ({self.url})", url=self.url)
            return False
        if resp.status in (412, 416):
            raise OriginChanged(f"the origin's file changed (HTTP {resp.status}) ({self.url})", url=self.url)
        raise self._error(f"origin answered HTTP {resp.status}", resp.status)

    def request(self, manifest: Manifest, start: int, end: int) -> aiohttp.client._RequestContextManager:
        headers = self._headers({"Range": range_header(start, end)})
        if manifest.identity.etag and not manifest.identity.etag.startswith("W/"):
            # RFC 9110 13.1.5: with If-Range a changed file comes back whole (200) instead of as a range
            # of the new version, which check() then reports as a change.
            headers["If-Range"] = manifest.identity.etag
        return self.session.get(self.url, headers=headers, timeout=TIMEOUT, ssl=self._ssl())
