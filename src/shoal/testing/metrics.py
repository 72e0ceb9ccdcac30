"""Scraping a server's /metrics in tests, with prometheus-client's own parser (as Prometheus would read it)."""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Scrape:
    """One scrape: every sample by its name and labels, and every family's type by its name."""

    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]
    types: dict[str, str]

    def value(self, name: str, **labels: str) -> float:
        """The sample ``name`` with exactly these labels (KeyError when there is none)."""
        return self.samples[name, frozenset(labels.items())]

    def total(self, name: str, **labels: str) -> float:
        """The sum of the samples ``name`` whose labels include these (0 when there are none)."""
        wanted = set(labels.items())
        return sum(v for (n, found), v in self.samples.items() if n == name and wanted <= found)

    def labels(self, name: str) -> list[dict[str, str]]:
        """The label sets of the samples ``name``."""
        return [dict(found) for (n, found) in self.samples if n == name]


def parse(text: str) -> Scrape:
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[sample.name, frozenset(sample.labels.items())] = sample.value
    return Scrape(samples, types)


def scrape(base_url: str, timeout: float = 10.0) -> Scrape:
    """GET ``base_url``/metrics and parse it; the reply must be the text exposition format."""
    with urllib.request.urlopen(f"{base_url.rstrip('/')}/metrics", timeout=timeout) as reply:
        assert reply.headers.get_content_type() == "text/plain", reply.headers
        return parse(reply.read().decode())
