"""Digest downloads share a content task (core.content_alias, peer.content_task): a `shoal get --digest` that
finished registers its file's content task and vouches for it; the next download of the URL and digest
joins that task, where every piece is checked against hashes its id commits to. A liar's content task costs
one attempt and never places a wrong file; a download without a digest never follows one."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import urllib.error
import urllib.request

import pytest

import shoal
from shoal.core.ids import content_task_id, task_id_for_url
from shoal.core.manifest import Manifest, OriginIdentity
from shoal.core.messages import piece_hash_bytes
from shoal.testing.hostile import HostilePeer, piece_hashes
from shoal.testing.poll import wait_until_async
from tests.integration.conftest import run_get
from tests.integration.test_attacks import origin_identity
from tests.integration.test_swarm import wait_for_file

SIZE = 4 << 20  # 16 pieces of 256 KiB


def content_id(data: bytes) -> str:
    manifest = Manifest.for_identity(OriginIdentity(len(data)))
    hashes = piece_hashes(manifest, data)
    return content_task_id(len(data), manifest.piece_length, [hashes[i] for i in range(manifest.piece_count)])


def task_summary(tracker: str, task_id: str) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(f"{tracker}/v1/tasks/{task_id}") as reply:
            return json.loads(reply.read())  # type: ignore[no-any-return]
    except urllib.error.HTTPError:
        return None


async def registered_and_vouched(tracker: str, url: str, digest: str, content: str) -> None:
    """Wait until the content task is registered with every hash and the URL task's peers vouch for it."""
    await wait_until_async(
        lambda: (task_summary(tracker, content) or {}).get("hashed_pieces") == 16, "the content task registered"
    )
    url_task = task_id_for_url(url, digest=digest)
    await wait_until_async(
        lambda: (task_summary(tracker, url_task) or {}).get("content_task") == content, "a vouch for it"
    )


@pytest.mark.parametrize(("algorithm", "option"), [("sha256", "--digest"), ("MD5", "--hash")])
async def test_a_digest_download_joins_the_content_task_an_earlier_one_registered(
    tmp_path, tracker, origin, make_file, spawn_get, algorithm: str, option: str
):
    """Of any algorithm: the swarm is the URL's and the digest's (algorithm and value, in any case)."""
    src = origin()
    data = make_file(src.root / "d.bin", SIZE)
    url, digest = src.url("d.bin"), f"{algorithm}:" + hashlib.new(algorithm.lower(), data).hexdigest()
    t = tracker()
    content = content_id(data)
    first = spawn_get(url, "-o", str(tmp_path / "first.bin"), "--tracker", t.url, option, digest, "--upload-time", "60")
    wait_for_file(tmp_path / "first.bin", first)
    # The first download registered the content task with every hash, and serves it.
    await registered_and_vouched(t.url, url, digest, content)
    (tmp_path / "second").mkdir()
    result = await asyncio.wait_for(
        shoal.aget(url, dest_dir=tmp_path / "second", tracker=t.url, digest=digest, upload_time=0), 60
    )
    assert result.task_id == content and result.path.read_bytes() == data
    assert result.digest == digest.lower()


async def test_a_liars_content_task_costs_one_attempt_and_the_origins_bytes_are_placed(
    tmp_path, tracker, origin, make_file
):
    """Mallory registers a content task for other bytes of the same length, serves them, and vouches for it
    as the file of the URL and digest: the honest download follows the alias, finds the file does not match
    the digest, drops that task and downloads the URL's own, from the origin."""
    src = origin()
    data = make_file(src.root / "e.bin", SIZE)
    url, digest = src.url("e.bin"), "sha256:" + hashlib.sha256(data).hexdigest()
    forged = os.urandom(SIZE)
    lie = content_id(forged)
    t = tracker()
    url_task = task_id_for_url(url, digest=digest)
    async with HostilePeer(t.url, url, task_id=lie) as mallory:
        manifest = Manifest.for_identity(origin_identity(url))
        hashes = piece_hashes(manifest, forged)
        listed = piece_hash_bytes(tuple(hashes[i] for i in range(manifest.piece_count)))
        registered = await mallory.announce(
            event="started",
            origin=manifest.identity,
            piece_hashes=base64.b64encode(listed).decode(),
        )
        have = mallory.serve(manifest, registered["generation"], forged)
        await mallory.announce(generation=registered["generation"], bitfield=have.encode(), event="completed")
        vouched = await mallory.announce(task_id=url_task, event="completed", content_task=lie)
        # And for the URL without a digest: a download of it has nothing to check a content task against.
        await mallory.announce(task_id=task_id_for_url(url), event="completed", content_task=lie)
        assert vouched.get("content_task") in ("", None)  # a reply names the alias only to peers joining
        before = src.bytes_sent()
        result = await asyncio.to_thread(
            run_get, url, "-o", str(tmp_path / "e.bin"), "--tracker", t.url, "--digest", digest, "--upload-time", "0"
        )
        plain = await asyncio.to_thread(
            run_get, url, "-o", str(tmp_path / "plain.bin"), "--tracker", t.url, "--upload-time", "0"
        )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "e.bin").read_bytes() == data
    assert "does not hold" in result.stderr
    # The file came from the origin once (Mallory's pieces check out against her task's list, but the
    # whole file fails the digest), and once more for the download without a digest.
    assert src.bytes_sent() - before <= 2 * SIZE + 65536
    assert plain.returncode == 0, plain.stderr
    assert (tmp_path / "plain.bin").read_bytes() == data


@pytest.mark.parametrize("algorithm", ["sha256", "sha1"])
async def test_the_daemon_registers_and_seeds_the_content_task_of_a_digest_download(
    tmp_path, tracker, origin, make_file, daemon, algorithm: str
):
    src = origin()
    data = make_file(src.root / "g.bin", SIZE)
    url, digest = src.url("g.bin"), f"{algorithm}:" + hashlib.new(algorithm, data).hexdigest()
    t = tracker()
    node = daemon(t)
    placed = await asyncio.to_thread(node.get, url, tmp_path / "g.bin", "--digest", digest)
    assert placed.returncode == 0, placed.stderr
    content = content_id(data)
    await registered_and_vouched(t.url, url, digest, content)
    (tmp_path / "elsewhere").mkdir()
    before = src.bytes_sent()
    result = await asyncio.wait_for(
        shoal.aget(url, dest_dir=tmp_path / "elsewhere", tracker=t.url, digest=digest, upload_time=0), 60
    )
    assert result.task_id == content and result.path.read_bytes() == data
    assert result.bytes_from_peers == SIZE and src.bytes_sent() - before < 65536  # from the daemon, not the origin
