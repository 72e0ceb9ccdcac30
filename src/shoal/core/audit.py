"""Spot checks of the piece hashes that lease holders report (README, "Trust model").

A URL task's piece hash comes from one peer, the holder of the piece's origin lease, and every other peer
checks the piece against it. A holder that lied would have its bytes accepted. Spot checks bound that:

- A share of the reported pieces (AUDIT_SHARE) is checked. Which ones is decided by a keyed hash with a key
  only the tracker knows (a new one each start), so a liar cannot tell which of its pieces will be.
- A piece under check is leased once more, to a peer on another host (as the tracker sees the addresses)
  that lacks it; that peer fetches it from the origin and reports its own hash, as any lease holder does.
  This costs the origin AUDIT_SHARE more bytes, instead of the peers' network.
- The hash that peers on two hosts agree on stands. Agreement with the first report closes the check. A
  disagreement means one of them lied (or the origin sent other bytes under one identity): a third host
  fetches the piece, and once two hosts agree, each peer whose hash lost is banned for everyone (the
  tracker checked it, so no quorum of accusers is needed) and every other hash it reported is revoked: the
  pieces are leased again, and peers holding one of them from a peer drop it.
- After MAX_VOTES hosts without two that agree (an origin that sends different bytes each time), the check
  is closed as it stands.

A lease holder that lies about k pieces goes unnoticed with probability (1 - AUDIT_SHARE) ** k, when a peer
on another host that lacks each checked piece asks for leases before it holds it (README gives figures).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

AUDIT_SHARE = 1 / 64
"""The share of reported pieces checked again from the origin: about 1.6% more origin bytes."""
MAX_VOTES = 4


@dataclass(frozen=True, slots=True)
class Vote:
    peer_id: str
    host: str
    digest: str


@dataclass(frozen=True, slots=True)
class Audit:
    """One piece under check: the report that started it, then each checker's."""

    piece: int
    votes: tuple[Vote, ...]

    @property
    def hosts(self) -> frozenset[str]:
        return frozenset(v.host for v in self.votes)

    def with_vote(self, vote: Vote) -> Audit:
        return Audit(self.piece, (*self.votes, vote))


@dataclass(frozen=True, slots=True)
class Verdict:
    digest: str
    """The hash that stands: peers on two hosts reported it."""
    liars: tuple[str, ...]
    """The peers whose hash lost."""


def is_audited(key: bytes, task_id: str, generation: int, piece: int, share: float = AUDIT_SHARE) -> bool:
    """Whether this piece's reported hash is checked again. No key (an empty one): no checks."""
    if not key:
        return False
    mac = hashlib.blake2b(f"{task_id}/{generation}/{piece}".encode(), key=key, digest_size=8).digest()
    return int.from_bytes(mac, "big") < share * 2**64


def tally(audit: Audit) -> Verdict | None:
    """The hash two hosts agree on, once they do; None while they do not (yet)."""
    hosts: dict[str, set[str]] = {}
    for vote in audit.votes:
        hosts.setdefault(vote.digest, set()).add(vote.host)
    for digest, agreeing in hosts.items():
        if len(agreeing) >= 2:
            return Verdict(digest, tuple(dict.fromkeys(v.peer_id for v in audit.votes if v.digest != digest)))
    return None
