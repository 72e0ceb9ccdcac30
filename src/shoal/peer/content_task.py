"""A finished digest download's content task, registered with the tracker and seeded beside its URL task.

A download with ``--digest`` joins a URL task (its id covers the URL and the digest). Once its file has
matched the digest, the file's content task (core.ids.content_task_id: its id commits to every piece hash)
is registered with the tracker, the file is served under it too, and the URL task's announces vouch for
it (core.content_alias): later downloads of the same URL and digest are handed that content task, in which
every piece is checked against hashes its id commits to, whoever reported them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shoal.core.bitfield import Bitfield
from shoal.core.ids import content_task_id
from shoal.core.manifest import Manifest
from shoal.core.messages import AnnounceRequest, piece_hash_bytes
from shoal.peer.server import PieceServer, ServedTask
from shoal.peer.tracker_client import TrackerClient


@dataclass(slots=True)
class ContentSeed:
    task_id: str
    generation: int
    served: ServedTask


async def register_content(
    tracker: TrackerClient,
    server: PieceServer,
    request: Callable[..., AnnounceRequest],
    manifest: Manifest,
    path: Path,
    hashes: list[str],
) -> ContentSeed:
    """Register the content task of a complete file whose pieces hash to ``hashes`` (in order) and serve the
    file under it. Raises TrackerUnavailable when the tracker cannot be reached."""
    task_id = content_task_id(manifest.length, manifest.piece_length, hashes)
    registration = request(
        event="completed", generation=0, origin=manifest.identity, piece_hash_bytes=piece_hash_bytes(tuple(hashes))
    )
    reply = await tracker.announce(task_id, registration)
    served = server.publish(task_id, reply.generation, manifest, path, Bitfield.full(manifest.piece_count))
    return ContentSeed(task_id, reply.generation, served)
