"""The tracker's configuration: every field documented, every default here."""

from __future__ import annotations

from dataclasses import dataclass


# No slots: the class attributes must stay readable as the defaults (the CLI shows them).
@dataclass(frozen=True)
class TrackerConfig:
    host: str = "0.0.0.0"
    """Address to listen on."""
    port: int = 6969
    """TCP port to listen on; 0 picks a free one."""
    db: str = "sqlite:///shoal-tracker.db"
    """Database URL: sqlite:///path, postgresql://user@host/db or mysql://user@host/db."""
    interval: float = 5.0
    """Seconds between a peer's periodic announces (peers announce sooner when they need leases)."""
    peer_ttl: float = 15.0
    """A peer unheard of for this long is dropped from hand-outs and its origin leases lapse."""
    max_peers: int = 50
    """Most peers in one hand-out."""
    max_body: int = 256 * 1024
    """Largest request body accepted, in bytes; larger ones get a 413."""
