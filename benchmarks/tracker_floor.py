#!/usr/bin/env python3
"""A stand-in tracker that answers every JSON announce at once with a canned reply: the cost of HTTP and the
event loop alone, at the load generator's pattern, to set beside the real tracker's CPU per announce.

It serves ``POST /v1/tasks/{task_id}/announce`` the way ``shoal tracker`` serves it (shoal.http.limits'
Runner with the tracker's RUNNER_OPTIONS, the body read whole through ``read_body``), but decides nothing:
the reply is one set of bytes of ``--reply-bytes`` (an AnnounceResponse with as many peers as make that
size), encoded once. What it adds on request, one at a time, to price each layer of the real tracker:

- ``--middlewares N``: N pass-through aiohttp middlewares (the tracker runs four on an announce);
- ``--decode``: the body decoded into ``core.messages.AnnounceRequest`` (core.structs.decode);
- ``--encode``: the reply encoded afresh from its struct on every request.

``--lean`` serves the same replies without aiohttp's server: an asyncio Protocol that finds a request's head
and its Content-Length body in what arrived and writes the canned reply, nothing else (no limits, no
timeouts, no routing: a floor for what a lean announce path could cost, never a server to run).
``--lean --service`` puts the real ``TrackerService`` (a fresh SQLite file) behind that Protocol: each body
decoded, decided and stored, the reply encoded, with no routing, middlewares, cap, metrics or limits: what
the tracker would cost per announce with the leanest HTTP path.

Run it pinned to CPU 0, then ``tracker_load.py --url URL --pid PID`` against it (the generator pins itself
to CPU 1); it prints ``floor listening on URL pid PID`` and runs until SIGINT or SIGTERM::

    taskset -c 0 python3 benchmarks/tracker_floor.py --port 0 &
    python3 benchmarks/tracker_load.py --url http://127.0.0.1:PORT --pid PID --rates 1000,2000 --prime-rate 1000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import msgspec
from aiohttp import web
from aiohttp.typedefs import Handler

from shoal.core.errors import ProtocolError
from shoal.core.messages import AnnounceRequest, AnnounceResponse, PeerAddress
from shoal.core.structs import decode
from shoal.http.limits import read_body
from shoal.http.listen import listen, until_signalled
from shoal.tracker.app import RUNNER_OPTIONS
from shoal.tracker.config import TrackerConfig
from shoal.tracker.service import TrackerService


def canned_reply(size: int) -> AnnounceResponse:
    """An announce reply of about ``size`` bytes: peers added until it is that long."""
    peers: list[PeerAddress] = []
    while True:
        reply = AnnounceResponse(interval=5.0, peers=tuple(peers), generation=1)
        if len(msgspec.json.encode(reply)) >= size:
            return reply
        n = len(peers)
        peers.append(PeerAddress(peer_id=f"peer-{n:06d}", host=f"127.0.0.{10 + n % 16}", port=40000 + n))


def build(args: argparse.Namespace) -> web.Application:
    reply = canned_reply(args.reply_bytes)
    body = msgspec.json.encode(reply)
    encode = msgspec.json.encode

    async def announce(request: web.Request) -> web.Response:
        raw = await read_body(request)
        if args.decode:
            decode(raw, AnnounceRequest)
        return web.Response(body=encode(reply) if args.encode else body, content_type="application/json")

    @web.middleware
    async def passing(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await handler(request)

    app = web.Application(middlewares=[passing] * args.middlewares)
    app.router.add_post("/v1/tasks/{task_id}/announce", announce)
    return app


Respond = Callable[[bytes, bytes, str], "bytes | Awaitable[bytes]"]
"""What answers one request: (its head, its body, the client's address) -> the whole reply, or an awaitable."""


class LeanProtocol(asyncio.Protocol):
    """Keep-alive HTTP/1.1 at its barest: each request's head and Content-Length body, then the reply. One
    request at a time per connection, as the generator sends them (no pipelining)."""

    def __init__(self, respond: Respond) -> None:
        self.respond = respond
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.peer = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.peer = transport.get_extra_info("peername")[0]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end]
            lower = head.lower()
            at = lower.find(b"content-length:")
            stop = lower.find(b"\r\n", at)
            length = int(lower[at + 15 : stop if stop > 0 else None]) if at >= 0 else 0
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            reply = self.respond(head, body, self.peer)
            if isinstance(reply, bytes):
                self._write(reply)
            else:
                asyncio.ensure_future(reply).add_done_callback(lambda done: self._write(done.result()))

    def _write(self, reply: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(reply)


def _http(status: int, body: bytes) -> bytes:
    head = f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


async def serve_lean(host: str, port: int, respond: Respond) -> None:
    server = await asyncio.get_running_loop().create_server(lambda: LeanProtocol(respond), host, port)
    bound = server.sockets[0].getsockname()[1]
    async with server:
        await until_signalled(f"floor listening on http://{host}:{bound} pid {os.getpid()}")


async def serve_service(host: str, port: int, peer_ttl: float) -> None:
    """The real TrackerService (a fresh SQLite file) behind the bare Protocol: decode, decide, store, encode;
    no routing, middlewares, cap, metrics or limits."""
    with tempfile.TemporaryDirectory(prefix="tracker-floor-") as tmp:
        config = TrackerConfig(db=f"sqlite:///{tmp}/tracker.db", peer_ttl=peer_ttl, max_new_peers_per_source=0)
        service = TrackerService(config)

        async def announce(head: bytes, body: bytes, peer: str) -> bytes:
            task_id = head.split(b" ", 2)[1].split(b"/")[3].decode()
            try:
                reply = await service.announce(task_id, decode(body, AnnounceRequest), peer)
            except ProtocolError as exc:
                return _http(400, msgspec.json.encode({"error": str(exc)}))
            return _http(200, msgspec.json.encode(reply))

        with service.collector:
            async with service.store:
                await service.resume()
                expiry = asyncio.create_task(service.expire_forever())
                try:
                    await serve_lean(host, port, announce)
                finally:
                    expiry.cancel()


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--reply-bytes", type=int, default=1500, help="size of the canned reply (default 1500)")
    p.add_argument("--middlewares", type=int, default=0, help="pass-through middlewares on the route")
    p.add_argument("--decode", action="store_true", help="decode each body into an AnnounceRequest")
    p.add_argument("--encode", action="store_true", help="encode the reply afresh on every request")
    p.add_argument("--lean", action="store_true", help="a bare asyncio Protocol instead of aiohttp's server")
    p.add_argument("--service", action="store_true", help="with --lean: the real TrackerService answers (SQLite)")
    p.add_argument("--peer-ttl", type=float, default=30.0, help="--service: the peers' TTL (tracker_load's: 30)")
    args = p.parse_args()
    if args.lean and args.service:
        await serve_service(args.host, args.port, args.peer_ttl)
        return
    if args.lean:
        canned = _http(200, msgspec.json.encode(canned_reply(args.reply_bytes)))
        await serve_lean(args.host, args.port, lambda head, body, peer: canned)
        return
    runner, port = await listen(build(args), args.host, args.port, **RUNNER_OPTIONS)
    try:
        await until_signalled(f"floor listening on http://{args.host}:{port} pid {os.getpid()}")
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
