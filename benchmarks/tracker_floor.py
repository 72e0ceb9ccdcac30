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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import msgspec
from aiohttp import web
from aiohttp.typedefs import Handler

from shoal.core.messages import AnnounceRequest, AnnounceResponse, PeerAddress
from shoal.core.structs import decode
from shoal.http.limits import read_body
from shoal.http.listen import listen, until_signalled
from shoal.tracker.app import RUNNER_OPTIONS


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


class LeanProtocol(asyncio.Protocol):
    """Keep-alive HTTP/1.1 at its barest: each request's head and Content-Length body, then the reply."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            at = head.find(b"content-length:")
            length = (
                int(head[at + 15 : head.find(b"\r\n", at) if head.find(b"\r\n", at) > 0 else None]) if at >= 0 else 0
            )
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            assert self.transport is not None
            self.transport.write(self.reply)


async def serve_lean(host: str, port: int, body: bytes) -> None:
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    reply = head.encode() + body
    server = await asyncio.get_running_loop().create_server(lambda: LeanProtocol(reply), host, port)
    bound = server.sockets[0].getsockname()[1]
    async with server:
        await until_signalled(f"floor listening on http://{host}:{bound} pid {os.getpid()}")


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--reply-bytes", type=int, default=1500, help="size of the canned reply (default 1500)")
    p.add_argument("--middlewares", type=int, default=0, help="pass-through middlewares on the route")
    p.add_argument("--decode", action="store_true", help="decode each body into an AnnounceRequest")
    p.add_argument("--encode", action="store_true", help="encode the reply afresh on every request")
    p.add_argument("--lean", action="store_true", help="a bare asyncio Protocol instead of aiohttp's server")
    args = p.parse_args()
    if args.lean:
        await serve_lean(args.host, args.port, msgspec.json.encode(canned_reply(args.reply_bytes)))
        return
    runner, port = await listen(build(args), args.host, args.port, **RUNNER_OPTIONS)
    try:
        await until_signalled(f"floor listening on http://{args.host}:{port} pid {os.getpid()}")
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
