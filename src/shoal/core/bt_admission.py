"""Which hosts a private BitTorrent tracker admitted to which swarm, recently: what a wire seeder asks before
it answers a handshake. Values and ``now`` in, values out.

A fleet's torrents are private (BEP 27): the tracker takes an announce only with a passkey of the fleet
(tracker.bt), so the addresses it heard a swarm announced from are the fleet's clients of that swarm. An
info-hash, though, is no secret (any torrent file names it), so a seeder that answered every handshake
would serve a private torrent to whoever read one. The rule: a wire seeder serves an info-hash only to a
host the tracker admitted to that swarm within the last ``ttl`` seconds (the tracker's BitTorrent peer TTL:
a client announces every interval, so one that keeps downloading stays admitted, and one that stopped, or
announced ``stopped``, is not).

Rules, and why:

- An admission is keyed by the swarm and the address the announce *came from*, not the ``ip`` it may
  claim: a passkey admits the host that showed it, and a client connects to a seeder from that same host.
  The port is not part of it: a client listens on one port and connects from another.
- Bounded: at most ``limit`` admissions (the least recently renewed goes first), so a fleet's announces can
  grow it only as far as its live clients; a forgotten one costs its client a refused handshake until its
  next announce.
"""

from __future__ import annotations

from collections import OrderedDict

ADMISSION_LIMIT = 200_000
"""Admissions kept, all swarms together."""


class Admissions:
    """The admissions of one tracker: (info-hash, address) -> until when. The tracker's BitTorrent side owns
    it; nothing here reads a clock."""

    def __init__(self, ttl: float, limit: int = ADMISSION_LIMIT) -> None:
        self.ttl = ttl
        self.limit = limit
        self._until: OrderedDict[tuple[bytes, str], float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._until)

    def admit(self, info_hash: bytes, address: str, now: float) -> None:
        """The host at ``address`` announced ``info_hash`` with the fleet's passkey ``now``."""
        key = (info_hash, address)
        self._until[key] = now + self.ttl
        self._until.move_to_end(key)
        while len(self._until) > self.limit:
            self._until.popitem(last=False)

    def leave(self, info_hash: bytes, address: str) -> None:
        """The host announced ``stopped``: it is admitted no more."""
        self._until.pop((info_hash, address), None)

    def until(self, info_hash: bytes, address: str, now: float) -> float | None:
        """Until when the host at ``address`` is admitted to ``info_hash``; None when it is not (now)."""
        until = self._until.get((info_hash, address))
        if until is None or until < now:
            return None
        return until
