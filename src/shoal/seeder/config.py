"""The seeder's configuration: every field documented, every default here (the CLI shows them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from shoal.http.credentials import Credentials


# No slots: the class attributes must stay readable as the defaults.
@dataclass(frozen=True)
class SeederConfig:
    dirs: tuple[Path, ...] = ()
    """Directories to watch and publish, recursively. Each is named by its last component in URLs."""
    host: str = "0.0.0.0"
    """Address the HTTP endpoints (and the embedded tracker) listen on."""
    port: int = 6390
    """TCP port of the HTTP endpoints; 0 picks a free one."""
    bt_port: int = 6881
    """TCP port of the BitTorrent wire protocol; 0 picks a free one."""
    tracker: str | None = None
    """Base URL of the Shoal tracker to publish to; None runs one in this process, on this port."""
    advertise: str | None = None
    """Base URL clients reach this seeder at (http://host:port), for torrents' web seeds and the tracker's
    announce URL. None: the Host a request came in on, which is right whenever clients and the requester
    see the seeder under the same name."""
    state_dir: Path = field(default_factory=lambda: Path.home() / ".local" / "state" / "shoal")
    """Where the hash index (and the embedded tracker's SQLite file) live."""
    settle: float = 0.5
    """Seconds a closed or moved-in file's size and mtime must stay unchanged before it is hashed."""
    quiet: float = 2.0
    """Seconds without events after which a file that was written but never closed is checked."""
    serve_wait: float = 30.0
    """How long a /serve for a file still being hashed waits for it before answering 503."""
    announce_interval: float = 60.0
    """Seconds between BitTorrent announces of each file when the tracker's reply names none."""
    credentials: Credentials = field(default_factory=Credentials)
    """The fleet token and TLS (shoal.http.credentials; ``--fleet-token-file``, ``--tls-cert``...): with a
    token the registrar's announces carry its credential (a passkey on the BitTorrent side), the JSON routes
    and the embedded tracker need it, and the torrents are private, for the fleet only; with a certificate
    the HTTP side (torrents, files, the embedded tracker) serves https, requiring client certificates under
    mutual TLS, and the certificate is presented to a tracker that asks for one. The files stay open to
    whoever passes TLS: they are the origin."""
