"""Prometheus metrics: what every long-running part serves at ``GET /metrics``, in the text exposition format.

Each server has a :class:`Metrics` of its own, with its own CollectorRegistry rather than the process-wide
default one: a test (or ``shoal demo``) runs many servers in one process, and each must report only itself.
A part's figures are read at scrape time by a collector over the state the part keeps anyway (a cache's
usage, a seeder's catalog, a tracker's swarms), rather than counted again on its hot paths; a part whose
state sits in SQL (pools, mirror jobs) reads it in a ``refresh`` that runs before each scrape, since a
collector cannot wait.

Rules every collector follows (the README's Metrics section lists each metric):

- Names by Prometheus' conventions: ``shoal_`` first, the unit last (``_bytes``, ``_seconds``), counters
  end in ``_total``.
- Label values come from small closed sets (a status, a kind, a source) or from the operator's own
  configuration (a mirror job's name): never a task id, peer id, URL or path, whose number grows without
  bound and which would give away what the fleet fetches. ``/metrics`` needs no token, like the health
  routes, so it names nothing a token protects.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import TYPE_CHECKING

import msgspec
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from shoal import __version__
from shoal.core.messages import ScopeBytes
from shoal.http import openapi

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

PATH = "/metrics"

# A counter's ``_created`` sample (when it was made) doubles the exposition and tells a scraper nothing the
# process's start time does not.
disable_created_metrics()  # type: ignore[no-untyped-call]

ROUTE = openapi.Route(
    "GET", PATH, "Prometheus metrics, in the text exposition format; no token needed", media="text/plain"
)
"""``GET /metrics`` in the OpenAPI documents of the servers that serve it."""

SOURCES = ("origin", "rack", "site", "elsewhere", "unlabelled")
"""The ``source`` label of bytes received, one per field of core.messages.ScopeBytes, in its order: the
origin; a peer in the same rack; in another rack of the same site; in another site; a peer where no
boundary is known (either side has no rack label)."""


class Metrics:
    """One server's registry, and the refreshes its scrapes wait for."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._refreshes: list[Callable[[], Awaitable[None]]] = []
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, process_resident_memory_bytes...
        self.add(_BuildInfo())

    def add(self, collector: Collector, *, refresh: Callable[[], Awaitable[None]] | None = None) -> None:
        """Report ``collector``'s figures; ``refresh`` (if any) gathers what it reads before each scrape."""
        self.registry.register(collector)
        if refresh is not None:
            self._refreshes.append(refresh)

    async def exposition(self) -> bytes:
        """The registry in the text exposition format, after every refresh."""
        for refresh in self._refreshes:
            await refresh()
        return generate_latest(self.registry)

    async def handle(self, request: web.Request) -> web.Response:
        """``GET /metrics``."""
        return web.Response(body=await self.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    def route(self) -> web.RouteDef:
        """``GET /metrics`` as a route definition, for a server that takes extra routes (the piece server)."""
        return web.get(PATH, self.handle)


def serve_metrics(app: web.Application) -> Metrics:
    """The application's Metrics, made with its ``/metrics`` route at the first call: the parts one
    application hosts (a seeder and its embedded tracker) report through one route. Call it while the
    application is being built."""
    metrics = app.get(METRICS_KEY)
    if metrics is None:
        metrics = app[METRICS_KEY] = Metrics()
        app.router.add_get(PATH, metrics.handle)
    return metrics


METRICS_KEY = web.AppKey("metrics", Metrics)


class _BuildInfo(Collector):
    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("shoal_build_info", "Always 1; the version of Shoal serving.", labels=["version"])
        info.add_metric([__version__], 1)
        yield info


def gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    """A gauge of one unlabelled value."""
    return GaugeMetricFamily(name, documentation, value=value)


def counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    """A counter of one unlabelled value (``name`` without ``_total``: the exposition adds it)."""
    return CounterMetricFamily(name, documentation, value=value)


def gauge_by(name: str, documentation: str, label: str, values: Iterable[tuple[str, float]]) -> GaugeMetricFamily:
    """A gauge with one label, one sample per (label value, value)."""
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for key, value in values:
        family.add_metric([key], value)
    return family


def counter_by(name: str, documentation: str, label: str, values: Iterable[tuple[str, float]]) -> CounterMetricFamily:
    """A counter with one label, one sample per (label value, value)."""
    family = CounterMetricFamily(name, documentation, labels=[label])
    for key, value in values:
        family.add_metric([key], value)
    return family


def by_source(received: ScopeBytes) -> list[tuple[str, float]]:
    """ScopeBytes as (``source`` label, bytes) pairs (SOURCES)."""
    return list(zip(SOURCES, msgspec.structs.astuple(received), strict=True))
