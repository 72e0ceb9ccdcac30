"""The seeder's /metrics (shoal.http.metrics): what it publishes, what it has hashed, what it sent over the
BitTorrent wire. All read at scrape time from the catalog, the seeder and the wire seeder."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.registry import Collector

from shoal.http.metrics import Metrics, counter, gauge

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from shoal.seeder.service import Seeder
    from shoal.seeder.wire import WireSeeder


class SeederCollector(Collector):
    def __init__(self, seeder: Seeder, wire: WireSeeder | None) -> None:
        self.seeder = seeder
        self.wire = wire

    def collect(self) -> Iterator[Metric]:
        seeder, catalog = self.seeder, self.seeder.catalog
        yield gauge(
            "shoal_seeder_files_published", "Files published: hashed, with a torrent and a task.", len(catalog.files)
        )
        yield gauge(
            "shoal_seeder_published_bytes",
            "Bytes of the published files.",
            sum(f.stat.size for f in catalog.files.values()),
        )
        yield gauge(
            "shoal_seeder_files_pending",
            "Files seen and not yet published (being written or hashed).",
            len(catalog.pending_names()),
        )
        yield counter(
            "shoal_seeder_hashed_bytes",
            "Bytes hashed (the hash index's hits are not hashed again).",
            seeder.hashed_bytes,
        )
        yield counter(
            "shoal_seeder_hashing_seconds", "Seconds spent hashing files, jobs added up.", seeder.hashing_seconds
        )
        if self.wire is not None:
            yield counter(
                "shoal_seeder_wire_sent_bytes",
                "Piece bytes sent over the BitTorrent wire protocol.",
                self.wire.uploaded,
            )
            yield gauge("shoal_seeder_wire_peers", "BitTorrent wire connections open.", self.wire.peers)
            yield counter(
                "shoal_seeder_wire_refused",
                "BitTorrent handshakes refused: the fleet's tracker had not admitted the host to the swarm.",
                self.wire.refused,
            )


def install(metrics: Metrics, seeder: Seeder, wire: WireSeeder | None) -> None:
    """Report the seeder's figures through ``metrics``."""
    metrics.add(SeederCollector(seeder, wire))
