"""The whole-file check of a finished download, and what to do when it fails.

Each piece is verified against the tracker's hash as it arrives, but the tracker only relays what a peer
reported: a hash it holds may have come from a peer that lied, or that saw other bytes at the origin under
the same identity, and the pieces matching it are then wrong all the same. A whole-file digest the user
gave (``--digest``) or the origin published (:mod:`shoal.core.digests`) is the check no peer can forge.

When it fails, the pieces this download fetched from the origin itself are the origin's bytes; every other
piece (from a peer, or resumed from an earlier run, whose sources are not recorded) is suspect. Those are
fetched again straight from the origin, and the peers that supplied them are reported as bad. Only a file
made of the origin's bytes alone that still fails is an integrity error: then the digest and the origin
disagree, and nothing Shoal can fetch would mend that.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated

from msgspec import Meta

from shoal.core.digests import PublishedDigest
from shoal.core.errors import IntegrityError, UsageError
from shoal.core.messages import whole

DIGEST_ALGORITHMS = {
    "md5": 32,
    "sha1": 40,
    "sha224": 56,
    "sha256": 64,
    "sha384": 96,
    "sha512": 128,
    "blake2b": 128,
    "blake3": 64,
}
"""The algorithms a user's ``--digest ALGORITHM:HEX`` may name (hashlib's names, and BLAKE3's), with the
length of their hex digest: blake2b is BLAKE2b-512, hashlib's default, as ``b2sum`` prints it."""
_USER_DIGEST = re.compile(r"^([A-Za-z0-9]+):([0-9a-fA-F]+)\Z")


def _any_case(name: str) -> str:
    """A pattern matching ``name`` in any case, spelled out letter by letter: JSON Schema's regular
    expressions (ECMA-262) have no case-insensitive flag."""
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in name)


WHOLE_DIGEST = re.compile(
    whole("(?:" + "|".join(f"{_any_case(a)}:[0-9a-fA-F]{{{n}}}" for a, n in DIGEST_ALGORITHMS.items()) + ")")
)
"""A whole ``ALGORITHM:HEX`` of :data:`DIGEST_ALGORITHMS`, in the form a JSON Schema states too."""

# The pattern is for the OpenAPI document: each message's ``checked`` refuses a digest that is not one with
# words that say what a digest is.
Digest = Annotated[
    str,
    Meta(
        description=f"ALGORITHM:HEX, ALGORITHM one of {', '.join(DIGEST_ALGORITHMS)}: what the file must be",
        extra_json_schema={"pattern": WHOLE_DIGEST.pattern},
    ),
]
"""A user's whole-file digest in a JSON message (the daemon's ``get``, a pool's push)."""


def parse_user_digest(text: str) -> str:
    """A user's ``ALGORITHM:HEX`` as Shoal keeps it, all lower case (the algorithm's case is ignored, as its
    hex's is); a UsageError says what it must be. The result is what a URL task's id covers
    (core.ids.task_id_for_url): one swarm per algorithm and value."""
    found = _USER_DIGEST.match(text.strip())
    algorithm = found[1].lower() if found else ""
    if found is None or algorithm not in DIGEST_ALGORITHMS:
        known = ", ".join(DIGEST_ALGORITHMS)
        raise UsageError(f"--digest takes ALGORITHM:HEX with ALGORITHM one of {known}, not {text!r}")
    if len(found[2]) != DIGEST_ALGORITHMS[algorithm]:
        raise UsageError(
            f"--digest {algorithm}: takes {DIGEST_ALGORITHMS[algorithm]} hex digits, not {len(found[2])} ({text!r})"
        )
    return f"{algorithm}:{found[2].lower()}"


@dataclass(frozen=True, slots=True)
class WholeFileCheck:
    algorithm: str
    hexdigest: str
    source: str
    """Who asked for it: ``--digest``, or the origin's header (``the origin's Repr-Digest``)."""

    def mismatch(self, url: str, actual: str) -> IntegrityError:
        """The error when the origin's own bytes fail this check: nothing is left to fetch again."""
        return IntegrityError(
            f"digest mismatch for {url}: expected {self.expected} ({self.source}), got {actual} from the origin's "
            "own bytes",
            expected=self.expected,
            actual=actual,
        )

    @property
    def expected(self) -> str:
        return f"{self.algorithm}:{self.hexdigest}"


def whole_file_checks(user_digest: str | None, published: PublishedDigest | None) -> tuple[WholeFileCheck, ...]:
    """The checks a finished file must pass. The user's ``ALGORITHM:HEX`` comes first and stands alone for
    its algorithm (the user named the bytes they want); the origin's digest is checked too when it is of
    another algorithm, since both are hashed in the same pass over the file."""
    checks: list[WholeFileCheck] = []
    if user_digest:
        algorithm, _, hexdigest = user_digest.lower().partition(":")
        checks.append(WholeFileCheck(algorithm, hexdigest, "--digest"))
    if published is not None and all(c.algorithm != published.algorithm for c in checks):
        checks.append(WholeFileCheck(published.algorithm, published.hexdigest, f"the origin's {published.header}"))
    return tuple(checks)


def failed_check(checks: tuple[WholeFileCheck, ...], computed: Mapping[str, str]) -> tuple[WholeFileCheck, str] | None:
    """The first check the file fails, with the ``ALGORITHM:HEX`` it has; None when it passes them all."""
    for check in checks:
        actual = f"{check.algorithm}:{computed[check.algorithm]}"
        if actual != check.expected:
            return check, actual
    return None


@dataclass(frozen=True, slots=True)
class Refetch:
    pieces: tuple[int, ...]
    """Every piece not fetched from the origin by this download, ascending."""
    suspects: tuple[str, ...]
    """The peers that supplied any of them, sorted."""

    def describe(self, check: WholeFileCheck, actual: str, piece_count: int) -> str:
        suspects = ", ".join(self.suspects) or "none (the pieces were resumed from an earlier run)"
        return (
            f"the file does not match {check.source} (expected {check.expected}, got {actual}); suspected peers: "
            f"{suspects}; fetching {len(self.pieces)} of its {piece_count} pieces again from the origin"
        )


def plan_refetch(piece_count: int, sources: Mapping[int, str | None]) -> Refetch | None:
    """What to fetch again after a failed whole-file check. ``sources`` maps a piece to the peer it came
    from, or to None for one fetched from the origin; a piece missing from it was resumed from an earlier
    run. None when every piece came from the origin: there is nothing to refetch."""
    pieces = tuple(i for i in range(piece_count) if i not in sources or sources[i] is not None)
    if not pieces:
        return None
    suspects = sorted({peer for i in pieces if (peer := sources.get(i)) is not None})
    return Refetch(pieces, tuple(suspects))
