"""Joining a download's task: the generation, the manifest and how to fetch, from the tracker and the origin.

The tracker and the origin are asked at once (one round trip less before the first byte moves). The
origin's answer is checked against the tracker's manifest: a file that changed starts a new generation.
A content task may be named for the URL: by a seeder origin (DESIGN.md: a seeded file's task is its
content), or, for a download with a digest, by the tracker from what peers that finished it vouched for
(core.content_alias). It is joined only when its piece hashes hash to its id (core.ids.content_task_id),
so neither the tracker nor a peer can make us accept other bytes; one the tracker named is followed only
with a digest to check the file against at the end, and one that failed us (``distrusted``) never again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from shoal.core.digests import PublishedDigest
from shoal.core.errors import NoSwarmCopy, OriginError, TrackerUnavailable
from shoal.core.ids import content_task_id
from shoal.core.manifest import Manifest
from shoal.core.messages import AnnounceRequest, AnnounceResponse
from shoal.peer.origin import Origin, Probe
from shoal.peer.tracker_client import TrackerClient

log = logging.getLogger("shoal.peer")

Request = Callable[..., AnnounceRequest]
"""Builds an announce of ours: ``request(event=..., generation=..., **fields)``."""


@dataclass(slots=True)
class Joined:
    task_id: str
    manifest: Manifest
    generation: int
    range_ok: bool
    direct: bool
    """No tracker to talk to: straight from the origin (no tracker, or unreachable with ``fallback``)."""
    interval: float = 5.0
    published: PublishedDigest | None = None
    """The origin's whole-file digest, from the probe."""
    content_hashes: dict[int, str] = field(default_factory=dict)
    """A content task's every hash, checked against its id."""
    via_alias: bool = False
    """The content task joined is the one the tracker named for the digest (not the origin's)."""


async def join(
    url: str,
    task_id: str,
    *,
    tracker: TrackerClient | None,
    origin: Origin,
    request: Request,
    fallback: bool,
    spawn: Callable[[Coroutine[Any, Any, None]], object],
    follow_alias: bool = False,
    distrusted: frozenset[str] = frozenset(),
    no_origin: bool = False,
) -> Joined:
    """Learn the generation and the manifest, checking the origin is still the same file (``no_origin``:
    taking the tracker's manifest as it is, without a word to the origin)."""
    reply: AnnounceResponse | None = None
    direct = tracker is None
    announced, probed = await asyncio.gather(
        tracker.announce(task_id, request(event="started", generation=0)) if tracker else _none(),
        _none() if no_origin else origin.probe(),
        return_exceptions=True,
    )
    if no_origin and not isinstance(announced, BaseException) and (announced is None or announced.manifest is None):
        raise NoSwarmCopy(f"no peer has {url} yet, and --no-origin forbids the origin", url=url)
    if isinstance(announced, TrackerUnavailable):
        if not fallback:
            raise announced
        log.warning("tracker unreachable; downloading straight from the origin (--fallback)")
        direct = True
    elif isinstance(announced, BaseException):
        raise announced
    else:
        reply = announced
    probe: Probe | None = None
    if isinstance(probed, OriginError):
        # Unreachable or failing (5xx, 408, 429): the swarm's copy will do. A refusal (401, 403, 404,
        # 410...) is the origin's answer, which the swarm must not override.
        if reply is None or reply.manifest is None or not probed.transient:
            raise probed
        log.warning("origin unreachable; relying on the swarm's copy")
    elif isinstance(probed, BaseException):
        raise probed
    elif probed is not None:
        probe = probed
    published = probe.digest if probe is not None else None
    content_hashes: dict[int, str] = {}
    named, via_alias = probe.task_id if probe is not None else "", False
    if not named and follow_alias and reply is not None and reply.content_task:
        named, via_alias = reply.content_task, True
    if named and named != task_id and named not in distrusted and reply is not None and tracker:
        switched = await _switch_task(tracker, task_id, named, request, spawn)
        if switched is not None:
            task_id, reply, content_hashes = switched
        via_alias = via_alias and switched is not None
    else:
        via_alias = False
    if reply is None or tracker is None or direct:
        assert probe is not None
        return Joined(task_id, Manifest.for_identity(probe.identity), 1, probe.ranges, True, published=published)
    generation = reply.generation
    if probe is not None and (reply.manifest is None or reply.manifest.identity != probe.identity):
        reply = await tracker.announce(
            task_id,
            request(event="started", generation=generation, origin=probe.identity, no_range=not probe.ranges),
        )
    if reply.manifest is None:
        raise OriginError(f"the tracker has no manifest for {url}", url=url)
    log.debug("joined generation %d: %d peers, %d leases", reply.generation, len(reply.peers), len(reply.leases))
    return Joined(
        task_id,
        reply.manifest,
        reply.generation,
        reply.range_ok,
        False,
        interval=reply.interval,
        published=published,
        content_hashes=content_hashes,
        via_alias=via_alias,
    )


async def _switch_task(
    tracker: TrackerClient,
    url_task: str,
    content_task: str,
    request: Request,
    spawn: Callable[[Coroutine[Any, Any, None]], object],
) -> tuple[str, AnnounceResponse, dict[int, str]] | None:
    """Join the content task a seeder named for this URL, so every URL of the same bytes shares one swarm,
    and leave the URL task just joined: the content task's id, its reply and its verified hashes. None when
    its hashes do not check out (not registered yet, or a lying tracker): the content task is left, and the
    download goes on as the URL task."""
    reply = await tracker.announce(content_task, request(event="started", generation=0))
    hashes = await tracker.hashes(content_task, 0) if reply.manifest is not None else None
    m = reply.manifest
    if m is None or hashes is None or len(hashes.hashes) != m.piece_count:
        verified = False
    else:
        ordered = [hashes.hashes[i] for i in range(m.piece_count) if i in hashes.hashes]
        verified = len(ordered) == m.piece_count and content_task_id(m.length, m.piece_length, ordered) == content_task
    leave = url_task if verified else content_task
    stopped = request(event="stopped", generation=0)

    async def leave_other_task() -> None:
        with contextlib.suppress(TrackerUnavailable):
            await tracker.announce(leave, stopped)

    spawn(leave_other_task())
    if not verified or hashes is None:
        log.warning(
            "the tracker's piece list for content task %s does not match its id; ignoring it", content_task[:16]
        )
        return None
    return content_task, reply, dict(hashes.hashes)


async def _none() -> None:
    return None
