"""The mirror manager's /metrics (shoal.http.metrics): its jobs by status, and each job's last success,
duration and size, read from its store before each scrape. A job's name is a label: the operator's
configuration names the jobs, so their number is bounded by it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from shoal.core.mirror_job import JobStatus
from shoal.http.metrics import Metrics, gauge, gauge_by

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from shoal.mirror.manager import MirrorManager
    from shoal.storage.mirror_store import JobRecord


class MirrorCollector(Collector):
    def __init__(self, manager: MirrorManager) -> None:
        self.manager = manager
        self.jobs: list[JobRecord] = []

    async def refresh(self) -> None:
        self.jobs = await self.manager.store.jobs()

    def collect(self) -> Iterator[Metric]:
        statuses = [job.state.status for job in self.jobs]
        yield gauge_by(
            "shoal_mirror_jobs",
            "Mirror jobs by status (tunasync's: none, pre-syncing, syncing, success, failed, paused, disabled).",
            "status",
            [(s.value, statuses.count(s)) for s in JobStatus],
        )
        yield gauge("shoal_mirror_workers", "Workers registered with this manager process.", len(self.manager.links))
        success = _per_job(
            "shoal_mirror_job_last_success_timestamp_seconds", "When the job's last successful sync ended (Unix time)."
        )
        duration = _per_job(
            "shoal_mirror_job_last_duration_seconds", "Seconds the job's last attempt took, success or failure."
        )
        size = _per_job("shoal_mirror_job_size_bytes", "Bytes of the version the job last published.")
        for job in self.jobs:
            state = job.state
            if state.last_update is not None:
                success.add_metric([job.name], state.last_update)
            if (
                state.last_started is not None
                and state.last_ended is not None
                and state.last_ended >= state.last_started
            ):
                duration.add_metric([job.name], state.last_ended - state.last_started)
            size.add_metric([job.name], job.size)
        yield from (success, duration, size)


def _per_job(name: str, documentation: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=["job"])


def install(metrics: Metrics, manager: MirrorManager) -> None:
    """Report the manager's figures through ``metrics``."""
    collector = MirrorCollector(manager)
    metrics.add(collector, refresh=collector.refresh)
