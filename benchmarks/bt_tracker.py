"""A minimal BitTorrent HTTP tracker for the swarm benchmark (BEP 3 announce, BEP 23 compact peers).

It exists so that standard BitTorrent clients (aria2c) in the lab can find each other, independently of
Shoal's own tracker: the aria2 baseline must not depend on the code under test. It keeps every swarm in
memory, hands out up to ``numwant`` random other peers (the address the request came from, the port the
client announced), drops a peer on ``event=stopped`` or after three intervals of silence, and answers
``/scrape`` (BEP 48) for completeness. There is no whitelist and no persistence: it is a lab tool.

Run it as a process: ``python benchmarks/bt_tracker.py [--host 0.0.0.0] [--port 6970] [--interval 2]``;
it prints ``bt tracker listening on http://HOST:PORT`` once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import random
import socket
import struct
import time
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

from aiohttp import web
from fastbencode import bencode

from shoal.http.listen import serve


@dataclass(slots=True)
class Peer:
    ip: str
    port: int
    left: int
    seen: float


@dataclass
class Swarms:
    interval: int
    peers: dict[bytes, dict[bytes, Peer]] = field(default_factory=dict)
    completed: dict[bytes, int] = field(default_factory=dict)

    def expire(self, now: float) -> None:
        horizon = now - 3 * self.interval
        for info_hash, swarm in list(self.peers.items()):
            for peer_id in [p for p, peer in swarm.items() if peer.seen < horizon]:
                del swarm[peer_id]
            if not swarm:
                del self.peers[info_hash]


SWARMS = web.AppKey("swarms", Swarms)


def _query(request: web.Request) -> dict[str, bytes]:
    """The raw query: info_hash and peer_id are 20 arbitrary bytes, so aiohttp's str decoding won't do."""
    out: dict[str, bytes] = {}
    for item in request.query_string.split("&"):
        key, _, value = item.partition("=")
        out.setdefault(unquote_to_bytes(key).decode("latin-1"), unquote_to_bytes(value.replace("+", " ")))
    return out


def _failure(reason: str) -> web.Response:
    return web.Response(body=bencode({b"failure reason": reason.encode()}), content_type="text/plain")


def _int(query: dict[str, bytes], name: str, default: int | None = None) -> int:
    raw = query.get(name)
    if raw is None:
        if default is None:
            raise ValueError(f"missing {name}")
        return default
    return int(raw)


async def announce(request: web.Request) -> web.Response:
    swarms = request.app[SWARMS]
    query = _query(request)
    try:
        info_hash, peer_id = query["info_hash"], query["peer_id"]
        if len(info_hash) != 20 or len(peer_id) != 20:
            return _failure("info_hash and peer_id must be 20 bytes")
        port = _int(query, "port")
        left = _int(query, "left", 0)
        numwant = min(max(_int(query, "numwant", 50), 0), 200)
    except (KeyError, ValueError) as exc:
        return _failure(f"bad announce: {exc}")
    event = query.get("event", b"").decode("latin-1")
    now = time.monotonic()
    swarms.expire(now)
    swarm = swarms.peers.setdefault(info_hash, {})
    if event == "stopped":
        swarm.pop(peer_id, None)
    else:
        previous = swarm.get(peer_id)
        if event == "completed" and (previous is None or previous.left > 0):
            swarms.completed[info_hash] = swarms.completed.get(info_hash, 0) + 1
        swarm[peer_id] = Peer(request.remote or "", port, left, now)
    others = [p for pid, p in swarm.items() if pid != peer_id and p.ip]
    chosen = random.sample(others, min(numwant, len(others)))
    reply: dict[bytes, object] = {
        b"interval": swarms.interval,
        b"min interval": swarms.interval,
        b"complete": sum(1 for p in swarm.values() if p.left == 0),
        b"incomplete": sum(1 for p in swarm.values() if p.left > 0),
    }
    if query.get("compact", b"1") != b"0":
        # BEP 23: 6 bytes per IPv4 peer (address, port in network order); IPv6 peers go in peers6 (BEP 7).
        v4 = [p for p in chosen if ipaddress.ip_address(p.ip).version == 4]
        v6 = [p for p in chosen if ipaddress.ip_address(p.ip).version == 6]
        reply[b"peers"] = b"".join(socket.inet_aton(p.ip) + struct.pack("!H", p.port) for p in v4)
        if v6:
            reply[b"peers6"] = b"".join(socket.inet_pton(socket.AF_INET6, p.ip) + struct.pack("!H", p.port) for p in v6)
    else:
        reply[b"peers"] = [
            {b"peer id": pid, b"ip": p.ip.encode(), b"port": p.port} for pid, p in swarm.items() if p in chosen
        ]
    return web.Response(body=bencode(reply), content_type="text/plain")


async def scrape(request: web.Request) -> web.Response:
    swarms = request.app[SWARMS]
    swarms.expire(time.monotonic())
    wanted = [
        unquote_to_bytes(v)
        for k, _, v in (i.partition("=") for i in request.query_string.split("&"))
        if k == "info_hash"
    ] or list(swarms.peers)
    files = {}
    for info_hash in wanted:
        swarm = swarms.peers.get(info_hash, {})
        files[info_hash] = {
            b"complete": sum(1 for p in swarm.values() if p.left == 0),
            b"incomplete": sum(1 for p in swarm.values() if p.left > 0),
            b"downloaded": swarms.completed.get(info_hash, 0),
        }
    return web.Response(body=bencode({b"files": files}), content_type="text/plain")


def build_app(interval: int) -> web.Application:
    app = web.Application()
    app[SWARMS] = Swarms(interval)
    app.router.add_get("/announce", announce)
    app.router.add_get("/scrape", scrape)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6970)
    parser.add_argument("--interval", type=int, default=2, help="announce interval in seconds")
    args = parser.parse_args()
    try:
        asyncio.run(serve(build_app(args.interval), args.host, args.port, "bt tracker"))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
