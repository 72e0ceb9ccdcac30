"""No label of any /metrics can carry a task id, a peer id, a URL or a path: every label's values come from a
closed set fixed in the code (a kind, an outcome, a source, a status), except a mirror job's name, which the
operator's configuration fixes. The collectors run here over state filled with arbitrary ids and names."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

import shoal
from shoal.core.announce_values import AnnounceOutcome, TaskRecord
from shoal.core.messages import ScopeBytes
from shoal.core.mirror_job import JobState, JobStatus
from shoal.core.mirror_toml import parse_config
from shoal.core.pool import MemberStatus, PushStatus
from shoal.http.metrics import SOURCES, Metrics
from shoal.mirror.manager import MirrorManager
from shoal.mirror.metrics import MirrorCollector
from shoal.storage.mirror_store import JobRecord
from shoal.testing.metrics import Scrape, parse
from shoal.tracker.admission import Admission
from shoal.tracker.config import TrackerConfig
from shoal.tracker.metrics import KINDS, LATENCY_BUCKETS, OUTCOMES, AnnounceTimer, TrackerCollector
from shoal.tracker.service import TrackerService

CLOSED: dict[str, frozenset[str]] = {
    "kind": frozenset(KINDS),
    "outcome": frozenset(OUTCOMES) | {"taken", "rejected"},
    "source": frozenset(SOURCES),
    "role": frozenset({"seed", "downloader"}),
    "status": frozenset(s.value for s in PushStatus) | {s.value for s in JobStatus},
    "state": frozenset(s.value for s in MemberStatus),
    "le": frozenset({*(str(float(b)) for b in LATENCY_BUCKETS), "+Inf"}),
    "version": frozenset({shoal.__version__}),
}

hex_ids = st.text("0123456789abcdef", min_size=64, max_size=64)


def exposition(metrics: Metrics) -> Scrape:
    return parse(asyncio.run(metrics.exposition()).decode())


def assert_closed(scraped: Scrape, jobs: frozenset[str] = frozenset()) -> None:
    for name, labels in scraped.samples:
        for label, value in labels:
            allowed = jobs if label == "job" else CLOSED.get(label)
            assert allowed is not None, f"{name}: label {label!r} has no closed set of values"
            assert value in allowed, f"{name}: {label}={value!r} is not one of the values the code fixes"


@settings(max_examples=20, deadline=None)
@given(
    tasks=st.lists(hex_ids, min_size=1, max_size=20, unique=True),
    peers=st.lists(hex_ids, min_size=1, max_size=5, unique=True),
)
def test_the_trackers_labels_never_carry_its_tasks_or_peers(tmp_path_factory, tasks, peers) -> None:
    db = tmp_path_factory.mktemp("tracker") / "never-opened.db"
    service = TrackerService(TrackerConfig(db=f"sqlite:///{db}"))
    assert service.counts is not None
    for n, task_id in enumerate(tasks):
        for peer_id in peers:
            service.scope_bytes.record(task_id, peer_id, ScopeBytes(origin=n, rack=1, unlabelled=2), now=1.0)
        outcome = AnnounceOutcome(task=TaskRecord(task_id, f"http://origin/{task_id}", 1, None), new_generation=True)
        outcome.rejected.append(n)
        service.counts.add(outcome)
    metrics = Metrics()
    AnnounceTimer(metrics)
    metrics.add(TrackerCollector(service, Admission(4, 5.0)))
    scraped = exposition(metrics)
    assert_closed(scraped)
    assert scraped.value("shoal_tracker_generations_started_total") == len(tasks)
    assert scraped.total("shoal_tracker_received_bytes_total") == sum(len(peers) * (n + 3) for n in range(len(tasks)))


@settings(max_examples=20, deadline=None)
@given(names=st.lists(st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True), min_size=1, max_size=6, unique=True))
def test_a_mirror_jobs_name_is_its_only_free_label(tmp_path_factory, names) -> None:
    jobs = "".join(
        f'[[jobs]]\nname = "{n}"\nprovider = "command"\nupstream = "/srv/{n}"\ncommand = "true"\n' for n in names
    )
    db = tmp_path_factory.mktemp("mirror") / "never-opened.db"
    config = parse_config(f'[manager]\ndb = "sqlite:///{db}"\n' + jobs)
    collector = MirrorCollector(MirrorManager(config))
    collector.jobs = [
        JobRecord(spec.name, spec.to_json(), JobState(JobStatus.SUCCESS, 20.0, 10.0, 20.0), size=5)
        for spec in config.jobs
    ]
    metrics = Metrics()
    metrics.add(collector)
    scraped = exposition(metrics)
    assert_closed(scraped, jobs=frozenset(names))
    assert {labels["job"] for labels in scraped.labels("shoal_mirror_job_size_bytes")} == set(names)
    assert scraped.value("shoal_mirror_jobs", status="success") == len(names)
    assert not [v for labels in scraped.labels("shoal_mirror_job_size_bytes") for v in labels.values() if "/srv/" in v]


def test_labels_of_the_exposition_helpers() -> None:
    # The process collector and the build info add no label beyond the version.
    assert_closed(exposition(Metrics()))
