"""A lying lease holder for tests: it takes the origin leases of a task's first pieces, reports the hashes of
bytes of its own for them, and serves those bytes with Shoal's real piece server.

That is what a lying lease holder does, and what an honest one does that saw other bytes at the origin under
the same identity: the tracker then holds hashes that the origin's bytes do not match, every piece the peer
serves passes the piece check, and only a whole-file digest (``--digest``, or the origin's own) tells.
(A peer whose bytes fail the tracker's hashes, bit rot, is the corrupt peer of tests/integration/
test_faults.py; the scripted attacker without leases is shoal.testing.hostile; this one is the case piece
hashes cannot catch.)

Run it as a process::

    python -m shoal.testing.lease_liar --tracker URL --url URL --file PATH [--pieces N] [--digest sha256:HEX]
        [--source ADDR]

``--file`` holds the bytes to serve (the origin's length); ``--pieces`` how many pieces from the first to
take (default: all); ``--digest`` joins the task of a ``shoal get --digest``. Once the tracker holds its
hashes it prints ``hostile peer listening on http://HOST:PORT``, then announces until it is killed.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
from pathlib import Path

import aiohttp

from shoal.core.bitfield import Bitfield
from shoal.core.ids import PeerIdentity, task_id_for_url
from shoal.core.manifest import Manifest
from shoal.core.messages import AnnounceRequest
from shoal.peer.origin import Origin
from shoal.peer.server import PieceServer
from shoal.peer.tracker_client import TrackerClient
from shoal.storage.partfile import piece_hash

HOST = "127.0.0.1"


async def _run(args: argparse.Namespace, path: Path, data: bytes) -> None:
    me = PeerIdentity.from_secret(secrets.token_hex(16), "hostile")
    task_id = task_id_for_url(args.url, digest=args.digest or "")
    server = PieceServer()
    port = await server.start(HOST, 0)
    # --source: the address its requests come from, so the tracker sees it on a host of its own (loopback
    # has many: 127.0.0.2 is another host than 127.0.0.1 to the tracker's spot checks and accusations).
    connector = aiohttp.TCPConnector(local_addr=(args.source, 0)) if args.source else None
    async with aiohttp.ClientSession(auto_decompress=False, connector=connector) as session:
        identity = (await Origin(args.url, session, {}).probe()).identity
        if identity.length != len(data):
            raise SystemExit(f"hostile: {path} has {len(data)} bytes, the origin's file {identity.length}")
        manifest = Manifest.for_identity(identity)
        tracker = TrackerClient(args.tracker, session)

        def request(**extra: object) -> AnnounceRequest:
            return AnnounceRequest(peer_id=me.peer_id, secret=me.secret, url=args.url, port=port, host=HOST, **extra)  # type: ignore[arg-type]

        reply = await tracker.announce(task_id, request(event="started", origin=identity))
        generation = reply.generation
        want = manifest.piece_count if args.pieces is None else args.pieces
        reply = await tracker.announce(task_id, request(generation=generation, want_leases=want))
        leased = sorted(reply.leases)[:want]
        if len(leased) < want:
            raise SystemExit(f"hostile: the tracker leased {len(leased)} of the {want} pieces asked for")
        done = {}
        for index in leased:
            start, end = manifest.span(index, 1)
            done[index] = piece_hash(data[start:end])
        have = Bitfield.of(manifest.piece_count, leased)
        reply = await tracker.announce(
            task_id, request(generation=generation, done=done, bitfield=have.encode(), released=tuple(reply.leases))
        )
        if reply.restart or reply.generation != generation:
            raise SystemExit("hostile: the tracker refused the hashes (it knew other ones)")
        server.publish(task_id, generation, manifest, path, have)
        print(f"hostile peer listening on http://{HOST}:{port}", flush=True)
        while True:
            await asyncio.sleep(reply.interval)
            reply = await tracker.announce(task_id, request(generation=generation, bitfield=have.encode()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracker", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--file", required=True)
    parser.add_argument("--pieces", type=int, default=None)
    parser.add_argument("--digest", default=None)
    parser.add_argument("--source", default=None, help="the local address of its requests (say 127.0.0.2)")
    args = parser.parse_args()
    path = Path(args.file).resolve()
    try:
        asyncio.run(_run(args, path, path.read_bytes()))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
