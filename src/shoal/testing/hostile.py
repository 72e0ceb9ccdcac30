"""A hostile peer for integrity tests: a small scripted client of the tracker's JSON API that serves bytes of
its own choosing from a real piece server.

It is not a mock of Shoal: it speaks the announce protocol and the peer data plane as an attacker on the
same network would, with a valid peer identity of its own (the trust model must hold even for a malicious
peer with valid credentials). Each test scripts what it claims and what it serves::

    async with HostilePeer(tracker.url, url) as mallory:
        reply = await mallory.announce(event="started", origin=identity)
        await mallory.serve(manifest, reply["generation"], forged_bytes)
        await mallory.announce(generation=1, bitfield=..., done={...})
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
import blake3

from shoal.core.bitfield import Bitfield
from shoal.core.ids import PeerIdentity, task_id_for_url
from shoal.core.manifest import Manifest, OriginIdentity
from shoal.peer.server import PieceServer


def identity(name: str, label: str = "") -> PeerIdentity:
    """A peer identity derived from ``name``: the same name gives the same id in every run."""
    return PeerIdentity.from_secret(hashlib.sha256(name.encode()).hexdigest()[:32], label)


def piece_hashes(manifest: Manifest, data: bytes) -> dict[int, str]:
    """Shoal's piece hashes (BLAKE3) of ``data`` cut by ``manifest``."""
    return {i: blake3.blake3(data[slice(*manifest.span(i, 1))]).hexdigest() for i in range(manifest.piece_count)}


class RefusedError(Exception):
    """The tracker answered with a 4xx: ``status`` and its JSON ``error``."""

    def __init__(self, status: int, error: str) -> None:
        super().__init__(f"HTTP {status}: {error}")
        self.status = status
        self.error = error


class HostilePeer:
    def __init__(
        self, tracker: str, url: str, *, task_id: str | None = None, name: str = "mallory", source: str = "127.0.0.2"
    ) -> None:
        """``source``: the address Mallory's requests come from, so that on loopback the tracker sees Mallory
        on a host of its own (127.0.0.2), as it would on a real network."""
        self.tracker = tracker.rstrip("/")
        self.url = url
        self.task_id = task_id or task_id_for_url(url)
        self.me = identity(name)
        self.source = source
        self.server = PieceServer()
        self._session: aiohttp.ClientSession | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="shoal-hostile-")

    async def __aenter__(self) -> HostilePeer:
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(self.source, 0)))
        await self.server.start("127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.stop()
        if self._session is not None:
            await self._session.close()
        self._dir.cleanup()

    async def post(self, body: dict[str, Any], task_id: str | None = None) -> dict[str, Any]:
        """POST a raw announce body; the reply's JSON, or RefusedError for a 4xx."""
        assert self._session is not None
        url = f"{self.tracker}/v1/tasks/{task_id or self.task_id}/announce"
        async with self._session.post(url, data=json.dumps(body)) as resp:
            reply = await resp.json(content_type=None)
            if resp.status >= 400:
                raise RefusedError(resp.status, str(reply.get("error", "")))
            return reply  # type: ignore[no-any-return]

    async def announce(self, *, as_peer: PeerIdentity | None = None, **fields: Any) -> dict[str, Any]:
        """An announce as this peer (or as ``as_peer``: an identity whose secret the attacker holds), with
        ``done`` given as {index: hex} and ``origin`` as an OriginIdentity."""
        who = as_peer or self.me
        task_id = fields.pop("task_id", None)
        body: dict[str, Any] = {
            "peer_id": who.peer_id,
            "secret": who.secret,
            "url": self.url,
            "port": self.server.port or 1,
            "host": "127.0.0.1",
        }
        for key, value in fields.items():
            if key == "done":
                value = {str(i): d for i, d in value.items()}
            elif isinstance(value, OriginIdentity):
                value = {"length": value.length, "etag": value.etag, "last_modified": value.last_modified}
            body[key] = value
        return await self.post(body, task_id)

    async def task(self) -> dict[str, Any]:
        assert self._session is not None
        async with self._session.get(f"{self.tracker}/v1/tasks/{self.task_id}") as resp:
            return await resp.json()  # type: ignore[no-any-return]

    def serve(self, manifest: Manifest, generation: int, data: bytes) -> Bitfield:
        """Offer ``data`` (any bytes of the manifest's length) as every piece of the task; returns the full
        bitfield to claim."""
        path = Path(self._dir.name) / f"{self.task_id}.{generation}"
        path.write_bytes(data)
        have = Bitfield.full(manifest.piece_count)
        self.server.publish(self.task_id, generation, manifest, path, have.copy())
        return have
