"""Pushing a job's new version to a pool (``[jobs.publish] pool``): each file, by its seeder URL, once seeded.

The worker's seeder publishes a version's files by itself (it watches the worker's directory); this module
adds the optional second step: ask the tracker's pool API (``POST {tracker}/v1/pools/{pool}/jobs``, the
tracker's shoal.tracker.pools) to place every file of the version on ``replicas`` members of the pool
(every member when None). The members fetch it through the swarm from the worker's seeder. The push is the
pool API client's call (core.pool_api.push, sent by http.pool_transport), as ``shoal pool push`` makes it.

Rules, and why:

- A file is pushed only once the seeder lists it (``GET /v1/files``): before that its ``/files`` URL
  answers 503, and members would start against an origin that is not ready.
- The push names the file's sha256, so every member checks what it placed against what the worker
  published, whoever it fetched the pieces from.
- A private pool's token comes from the worker's environment (``$SHOAL_POOL_TOKEN``), never from the
  configuration file, like the mirror tokens' ``token_env``.
- Any failure is a PublishError naming the file and the pool; the worker reports it as the attempt's
  failure, so the job's status says why its version did not reach the pool.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path
from urllib.parse import quote

import aiohttp

from shoal.core import pool_api
from shoal.core.errors import PoolRefused, PublishError, TrackerUnavailable
from shoal.core.pool_messages import PushRequest
from shoal.core.tracker_choice import TrackerChoice, parse_trackers
from shoal.http.pool_transport import run_call

SEED_WAIT = 300.0
"""Seconds to wait for the seeder to hash and list a new file before giving up on the push."""
PUSH_SECONDS = 30.0
"""Seconds one push may take before the tracker counts as unreachable."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(4 << 20):
            digest.update(chunk)
    return digest.hexdigest()


UNPUBLISHED_SUFFIXES = (".part", ".shoal-part", ".shoal-state", ".aria2")
"""Names the seeder never publishes besides hidden ones (shoal.seeder.names): partial downloads."""


def _published(rel: Path) -> bool:
    return not any(part.startswith(".") or part.endswith(UNPUBLISHED_SUFFIXES) for part in rel.parts)


def _files(version_dir: Path) -> list[Path]:
    """The files of a version that the seeder publishes (not the providers' hidden bookkeeping files)."""
    found = (p for p in version_dir.rglob("*") if p.is_file())
    return sorted(p for p in found if _published(p.relative_to(version_dir)))


async def push_version(
    session: aiohttp.ClientSession,
    *,
    seeder: str,
    tracker: str,
    pool: str,
    replicas: int | None,
    token: str | None,
    version_dir: Path,
    rel_prefix: str,
    seed_wait: float = SEED_WAIT,
) -> list[str]:
    """Push every file under ``version_dir`` (seeded as ``rel_prefix/<path inside>``); return the pool's
    job ids. ``seeder`` is a base URL, ``tracker`` one or several (comma-separated, asked in turn)."""
    trackers = TrackerChoice(parse_trackers(tracker, what="[worker] tracker"))
    files = await asyncio.to_thread(_files, version_dir)
    wanted = {f"{rel_prefix}/{p.relative_to(version_dir).as_posix()}": p for p in files}
    await _wait_seeded(session, seeder, set(wanted), seed_wait)
    jobs: list[str] = []
    for rel, path in wanted.items():
        digest = await asyncio.to_thread(_sha256, path)
        push = PushRequest(url=f"{seeder}/files/{quote(rel)}", replicas=replicas, digest=f"sha256:{digest}")
        try:
            job = await run_call(session, trackers, pool_api.push(pool, push), token=token, seconds=PUSH_SECONDS)
        except (PoolRefused, TrackerUnavailable) as exc:
            raise PublishError(f"pushing {rel} to pool {pool!r} at {tracker} failed: {exc}") from None
        jobs.append(job.job)
    return jobs


async def _wait_seeded(session: aiohttp.ClientSession, seeder: str, rels: set[str], wait: float) -> None:
    deadline = time.monotonic() + wait
    missing = set(rels)
    while True:
        try:
            async with session.get(f"{seeder}/v1/files") as resp:
                listing = await resp.json(content_type=None)
            missing -= {f["path"] for f in listing.get("files", []) if isinstance(f, dict)}
        except (aiohttp.ClientError, TimeoutError, ValueError, AttributeError):
            pass  # the seeder is busy or restarting: look again
        if not missing:
            return
        if time.monotonic() >= deadline:
            raise PublishError(f"the worker's seeder did not publish {sorted(missing)[0]} within {wait:g} s")
        await asyncio.sleep(0.2)
