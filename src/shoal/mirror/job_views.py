"""How the mirror manager's API shows a job: its own view (``MirrorJobView``) and tunasync's ``GET /jobs`` shape.

Pure conversions of a stored job (storage.mirror_store.JobRecord) and its spec into the API's messages; the
manager (shoal.mirror.manager) and its HTTP routes (shoal.mirror.manager_http) call them.

Rules, and why:

- A paused or disabled job shows no next schedule: nothing will start it until a user does.
- tunasync's shape is written from the same ``MirrorJobView`` the manager's own API serves, so the two never
  disagree; core.tunasync_status says how it writes times and sizes, with the time zone passed in.
"""

from __future__ import annotations

from datetime import tzinfo
from typing import Any

from shoal.core.mirror_config import JobSpec
from shoal.core.mirror_job import JobStatus
from shoal.core.tunasync_status import go_time, human_size
from shoal.mirror.messages import MirrorJobView, TunasyncJob
from shoal.storage.mirror_store import JobRecord

RUNNING_STATUSES = frozenset({JobStatus.PRE_SYNCING.value, JobStatus.SYNCING.value})


def job_view(job: JobRecord, spec: JobSpec | None, *, queued: bool = False) -> MirrorJobView:
    """A job's status as the API shows it."""
    s = job.state
    return MirrorJobView(
        name=job.name,
        worker=job.worker,
        status=s.status.value,
        last_update=s.last_update,
        last_started=s.last_started,
        last_ended=s.last_ended,
        next_schedule=None if s.status in (JobStatus.PAUSED, JobStatus.DISABLED) else job.next_schedule,
        upstream=spec.upstream if spec else str(job.spec.get("upstream", "")),
        provider=spec.provider if spec else str(job.spec.get("provider", "")),
        size=job.size,
        version=job.version,
        attempts=s.attempts,
        error_msg=s.error_msg,
        queued=queued,
    )


def tunasync_job(view: MirrorJobView, zone: tzinfo, size_text: str | None = None) -> TunasyncJob:
    """A job's status in tunasync's ``GET /jobs`` shape (core.tunasync_status says how it writes values);
    ``size_text``: the size as its log or ``set-size`` wrote it, shown as is, as tunasync shows it."""
    times = {
        "last_update": view.last_update,
        "last_started": view.last_started,
        "last_ended": view.last_ended,
        # tunasync sends no next schedule for a running job: its next run is decided when it ends.
        "next_schedule": None if view.status in RUNNING_STATUSES else view.next_schedule,
    }
    fields: dict[str, Any] = {}
    for name, t in times.items():
        fields[name], fields[f"{name}_ts"] = go_time(t, zone)
    return TunasyncJob(
        name=view.name,
        is_master=True,
        status=view.status,
        upstream=view.upstream,
        size=size_text or human_size(view.size),
        **fields,
    )
