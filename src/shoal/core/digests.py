"""The whole-file digest an origin publishes in its reply headers.

A header is used only when it describes the whole file, whatever part of it the reply carries:

=========================  ===========================  ===================================  ==========
header                     defined by                   form                                 used on
=========================  ===========================  ===================================  ==========
``Repr-Digest``            RFC 9530 (the selected       ``sha-256=:B64:, sha-512=:B64:``     200, 206
                           representation)              (a Structured Field dictionary)
``Content-Digest``         RFC 9530 (the message        as ``Repr-Digest``                   200 only
                           content: a 206's is of the
                           range)
``Digest``                 RFC 3230 (the instance;      ``SHA-256=B64, MD5=B64``             200, 206
                           obsoleted by RFC 9530)
``x-amz-checksum-sha256``  Amazon S3 (the object)       ``B64``; ``B64-N`` is a multipart    200, 206
                                                        upload's checksum of checksums
``Content-MD5``            RFC 1864 (the body)          ``B64``                              200 only
=========================  ===========================  ===================================  ==========

Rules: only SHA-512, SHA-256 and MD5 are understood (the algorithms these headers define that a file's
bytes can be checked by, strongest first); a member naming another algorithm (``sha``, ``unixsum``,
``adler``, ``crc32c``...) is skipped. A value that is not base64 of a digest of its algorithm's length is
skipped with the reason, for the caller to log: an origin's typo must not fail a download, and a value
that cannot be a digest cannot be checked. Base64 may lack its ``=`` padding (RFC 8941 4.2.7 asks parsers to
accept that). Of what remains, the strongest algorithm wins; between headers of one algorithm, the first in
the table above. Several fields of one name count as one comma-joined field (RFC 9110 5.3).

The bytes the digest covers are the bytes the reply carries, content coding included; Shoal stores them
as received (its client does not decompress), so a coded representation is checked as what is stored.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

DIGEST_SIZES = {"sha512": 64, "sha256": 32, "md5": 16}
"""Understood algorithms (hashlib's names), strongest first, with their digest sizes in bytes."""

_SF_NAMES = {"sha-512": "sha512", "sha-256": "sha256", "md5": "md5"}  # RFC 9530's registry
_RFC3230_NAMES = {"sha-512": "sha512", "sha-256": "sha256", "md5": "md5"}  # matched case-insensitively


@dataclass(frozen=True, slots=True)
class PublishedDigest:
    algorithm: str
    """hashlib's name: ``sha512``, ``sha256`` or ``md5``."""
    hexdigest: str
    header: str
    """The header it came from, as named in the table of this module."""

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hexdigest}"


@dataclass(frozen=True, slots=True)
class PublishedDigests:
    """What a reply's headers say of the whole file: the digest to check, and what was skipped and why."""

    best: PublishedDigest | None
    skipped: tuple[str, ...] = ()


def published_digest(fields: Mapping[str, Sequence[str]], *, partial: bool) -> PublishedDigests:
    """The whole-file digest of a reply whose header fields are ``fields`` (lower-case name -> the values of
    every field of that name). ``partial``: the reply is a 206, whose message content is only a range, so
    ``Content-Digest`` and ``Content-MD5`` do not describe the file."""
    found: list[PublishedDigest] = []
    skipped: list[str] = []

    def take(header: str, name: str, algorithm: str | None, value: bytes | str | None) -> None:
        if algorithm is None:
            skipped.append(f"{header}: algorithm {name!r} is not one Shoal checks")
        elif isinstance(value, str):
            skipped.append(f"{header}: {name} {value}")
        elif value is not None:
            found.append(PublishedDigest(algorithm, value.hex(), header))

    for header in ("repr-digest", "content-digest"):
        values = fields.get(header, ())
        if values and header == "content-digest" and partial:
            skipped.append("content-digest: a 206's is of the range, not the file")
            continue
        for key, item in _members(values):
            name = key.lower()
            algorithm = _SF_NAMES.get(name)
            take(_TITLES[header], name, algorithm, _byte_sequence(item, algorithm) if algorithm else None)
    for key, item in _members(fields.get("digest", ())):
        name = key.lower()
        algorithm = _RFC3230_NAMES.get(name)
        take("Digest", name, algorithm, _base64(item, algorithm) if algorithm else None)
    amz = _single(fields.get("x-amz-checksum-sha256", ()))
    if amz is not None:
        if "-" in amz:
            skipped.append("x-amz-checksum-sha256: a multipart upload's checksum of part checksums")
        else:
            take("x-amz-checksum-sha256", "sha256", "sha256", _base64(amz, "sha256"))
    md5 = _single(fields.get("content-md5", ()))
    if md5 is not None:
        if partial:
            skipped.append("content-md5: a 206's is of the range, not the file")
        else:
            take("Content-MD5", "md5", "md5", _base64(md5, "md5"))
    if not found:
        return PublishedDigests(None, tuple(skipped))
    strength = list(DIGEST_SIZES)
    best = min(enumerate(found), key=lambda pair: (strength.index(pair[1].algorithm), pair[0]))[1]
    return PublishedDigests(best, tuple(skipped))


_TITLES = {"repr-digest": "Repr-Digest", "content-digest": "Content-Digest"}


def _members(values: Sequence[str]) -> list[tuple[str, str]]:
    """``key=value`` members of comma-separated lists (a dictionary's parameters after ``;`` dropped).
    Neither a byte sequence nor base64 holds a comma, so splitting on commas is exact for every value this
    module reads; a member without ``=`` is kept with an empty value, to be skipped as malformed."""
    members = []
    for value in values:
        for member in value.split(","):
            member = member.strip()
            if not member:
                continue
            key, _, item = member.partition("=")
            members.append((key.strip(), item.split(";", 1)[0].strip()))
    return members


def _single(values: Sequence[str]) -> str | None:
    """The one value of a header that names one digest; several fields must agree (else it names none)."""
    distinct = {value.strip() for value in values}
    return distinct.pop() if len(distinct) == 1 else None


def _byte_sequence(item: str, algorithm: str) -> bytes | str:
    """An RFC 8941 byte sequence (``:B64:``) holding a digest of ``algorithm``, or why it does not."""
    if len(item) < 2 or not item.startswith(":") or not item.endswith(":"):
        return f"is not a byte sequence (:base64:): {item[:40]!r}"
    return _base64(item[1:-1], algorithm)


def _base64(text: str, algorithm: str) -> bytes | str:
    """Base64 (padded or not) of a digest of ``algorithm``, or why it is not."""
    text = text.strip()
    if len(text) % 4 == 1:
        return f"is not base64: {text[:40]!r}"
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return f"is not base64: {text[:40]!r}"
    if len(raw) != DIGEST_SIZES[algorithm]:
        return f"is {len(raw)} bytes, not the {DIGEST_SIZES[algorithm]} of a {algorithm} digest"
    return raw
