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
- The pool's token (every push needs it: tracker.pool_routes) comes from the worker's environment
  (``$SHOAL_POOL_TOKEN``), never from the configuration file, like the mirror tokens' ``token_env``.
- Any failure is a PublishError naming the file and the pool; the worker reports it as the attempt's
  failure, so the job's status says why its version did not reach the pool.
- In a fleet with a token the seeder's routes and the tracker's need the fleet's credential, which the
  worker sends, and a pushed URL is the seeder's ``/files/PASSKEY/REL`` (the seeder's own passkey,
  core.tickets.SEEDER_HOLDER), which every member can fetch whatever its tracker (a member shows its
  credential only to an origin that is one of its trackers). The tracker's pages hide the passkey.
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
from shoal.core.tickets import SEEDER_HOLDER
from shoal.core.tracker_choice import TrackerChoice, parse_trackers
from shoal.http.credentials import Credentials
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
    credentials: Credentials | None = None,
) -> list[str]:
    """Push every file under ``version_dir`` (seeded as ``rel_prefix/<path inside>``); return the pool's
    job ids. ``seeder`` is a base URL, ``tracker`` one or several (comma-separated, asked in turn);
    ``credentials`` the fleet's, as the worker's seeder holds them."""
    credentials = credentials or Credentials()
    trackers = TrackerChoice(parse_trackers(tracker, what="[worker] tracker"))
    files = await asyncio.to_thread(_files, version_dir)
    wanted = {f"{rel_prefix}/{p.relative_to(version_dir).as_posix()}": p for p in files}
    await _wait_seeded(session, seeder, set(wanted), seed_wait, credentials)
    key = credentials.key
    files_url = f"{seeder}/files/{key.passkey(SEEDER_HOLDER)}" if key is not None else f"{seeder}/files"
    jobs: list[str] = []
    for rel, path in wanted.items():
        digest = await asyncio.to_thread(_sha256, path)
        push = PushRequest(url=f"{files_url}/{quote(rel)}", replicas=replicas, digest=f"sha256:{digest}")
        try:
            call = pool_api.push(pool, push)
            job = await run_call(session, trackers, call, token=token, seconds=PUSH_SECONDS, credentials=credentials)
        except (PoolRefused, TrackerUnavailable) as exc:
            raise PublishError(f"pushing {rel} to pool {pool!r} at {tracker} failed: {exc}") from None
        jobs.append(job.job)
    return jobs


async def _wait_seeded(
    session: aiohttp.ClientSession, seeder: str, rels: set[str], wait: float, credentials: Credentials
) -> None:
    deadline = time.monotonic() + wait
    missing = set(rels)
    while True:
        try:
            headers = credentials.tracker_headers(time.time())
            async with session.get(f"{seeder}/v1/files", headers=headers, ssl=credentials.peer_tls()) as resp:
                listing = await resp.json(content_type=None)
            missing -= {f["path"] for f in listing.get("files", []) if isinstance(f, dict)}
        except (aiohttp.ClientError, TimeoutError, ValueError, AttributeError):
            pass  # the seeder is busy or restarting: look again
        if not missing:
            return
        if time.monotonic() >= deadline:
            raise PublishError(f"the worker's seeder did not publish {sorted(missing)[0]} within {wait:g} s")
        await asyncio.sleep(0.2)
