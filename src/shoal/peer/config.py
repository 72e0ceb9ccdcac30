"""Configuration of one `get`: every field documented, every default here (the CLI and the Python API
share these)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from shoal.http.credentials import Credentials

if TYPE_CHECKING:
    from shoal.core.download import Tuning

DEFAULT_LISTEN_HOST = "0.0.0.0"
"""Where a piece server (of a `get`, of the daemon) listens unless told: every IPv4 address."""
DEFAULT_LISTEN = f"{DEFAULT_LISTEN_HOST}:0"
"""``--listen`` unless told, as HOST:PORT: every IPv4 address, on a port the kernel picks."""


# No slots: the class attributes must stay readable as the defaults (the CLI shows them).
@dataclass(frozen=True)
class GetConfig:
    dest: Path
    """Where the finished file goes; a temporary file beside it holds the download until it is verified (a
    symlink, a device or a FIFO: see storage/placement.py)."""
    tracker: str | None = None
    """Tracker base URL (http://host:6969); None downloads straight from the origin."""
    headers: dict[str, str] = field(default_factory=dict)
    """Extra request headers, sent to the origin only (never to peers or the tracker)."""
    download_rate: int | None = None
    """Bytes per second for all of this download's fetches together; None for no limit."""
    upload_rate: int | None = None
    """Bytes per second for serving other peers; None for no limit."""
    upload_time: float = 60.0
    """Seconds to keep serving the file to other peers after it is complete."""
    fallback: bool = False
    """When the tracker cannot be reached at the start, download straight from the origin."""
    no_origin: bool = False
    """Peers only: never ask the origin (not even its headers); the file comes from the swarm or not at all,
    ending with NoSwarmCopy when no peer has supplied what is missing for ``tracker_patience`` seconds."""
    digest: str | None = None
    """``ALGORITHM:HEX``, lower case (core.whole_file.parse_user_digest), to verify the whole file against before
    it is moved into place."""
    stream_fd: int | None = None
    """A descriptor the file is also written to, in order, as its verified prefix grows (``-o -``: stdout)."""
    ignore_qp: tuple[str, ...] = ()
    """Query parameters (names or shell-style patterns) left out of the task's identity, so differently
    signed URLs of one file share one swarm (core.ids.identity_url); the origin is still asked by the URL."""
    task_tag: str = ""
    """Content behind origin credentials shared among the peers holding the same headers
    (core.ids.headers_tag): the task id is keyed by it, and no content task is joined or registered (a
    content task's id names the bytes alone, so anyone who knows them could ask for it)."""
    file_hashes: tuple[str, ...] = ()
    """Whole-file hashes to compute while the file downloads (peer/prefix_hash.py's ALGORITHMS), returned in
    ``Downloaded.hashes``: the daemon's cache names a file by its BLAKE3."""
    site: str = ""
    """Locality label: peers of the same site are preferred."""
    rack: str = ""
    """Locality label: peers of the same rack (and site) are preferred most."""
    listen_host: str = DEFAULT_LISTEN_HOST
    """Address the piece server listens on; a specific address is also what peers are told."""
    listen_port: int = 0
    """Port the piece server listens on; 0 picks a free one."""
    max_uploads: int = 16
    """Concurrent uploads before the piece server answers 503 (busy)."""
    peer_requests: int = 8
    """Runs fetched from peers at once, all peers together."""
    per_peer_requests: int = 2
    """Runs fetched from any one peer at once, when there are others to fetch from."""
    lone_peer_requests: int = 4
    """Runs fetched at once from a peer that is the only one to fetch from: each run is one TCP stream, and
    one stream alone does not fill a fast link, and more than a few gain nothing while each holds a piece
    in memory (benchmarks/single_peer.py; figures in benchmarks/RESULTS.md)."""
    run_bytes: int = 4 << 20
    """Largest run of consecutive pieces asked for in one request to a peer."""
    lease_bytes: int = 2 << 20
    """How much origin work to ask the tracker for at a time."""
    direct_streams: int = 4
    """Parallel Range requests to the origin when there is no tracker."""
    restarts: int = 3
    """How many times the origin may change under a download before it gives up."""
    tracker_patience: float = 60.0
    """Seconds without a tracker answer, while stuck, before the download gives up."""
    origin_retries: int = 5
    """Consecutive failed origin requests before the download gives up."""
    credentials: Credentials = field(default_factory=Credentials)
    """The fleet token and TLS (shoal.http.credentials): sent to the tracker, tickets to peers, and what the
    piece server asks of peers. The default: none (a trusted LAN)."""
    fleet_origin: bool = False
    """The origin is a node of the fleet (another daemon's ``/v1/content/{id}``, named by an export): it is
    asked with ``credentials`` as a peer is (peer.origin), not as an outside origin."""

    def tuning(self) -> Tuning:
        """The settings the download's decisions read (core.download)."""
        # Imported here: the daemon's clients (``shoal get`` handing its download over) import this module
        # for its defaults, and the download's core is theirs to load only when they download themselves.
        from shoal.core.download import Tuning

        return Tuning(
            run_bytes=self.run_bytes,
            lease_bytes=self.lease_bytes,
            direct_streams=self.direct_streams,
            peer_requests=self.peer_requests,
            per_peer_requests=self.per_peer_requests,
            lone_peer_requests=self.lone_peer_requests,
            origin_retries=self.origin_retries,
            tracker_patience=self.tracker_patience,
            origin=not self.no_origin,
        )
