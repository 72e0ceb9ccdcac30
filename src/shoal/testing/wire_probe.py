"""Probes for tests of the BitTorrent wire seeder's admission (seeder.wire, core.bt_admission): a handshake
and an HTTP request from a chosen loopback address, which stands for a host of its own (127.0.0.0/8 is all
this host's, and the seeder and the tracker see each address as a distinct peer)."""

from __future__ import annotations

import http.client
import socket
import urllib.request

_PROTOCOL = bytes([19]) + b"BitTorrent protocol"


def handshake_answered(source: str, port: int, info_hash: bytes, host: str = "127.0.0.1") -> bool:
    """Whether the wire seeder at ``host:port`` answers a BEP 3 handshake for ``info_hash``, sent from the
    address ``source``, with its own handshake (True), or closes the connection without a byte (False).
    Anything else (a part of a handshake) is an AssertionError."""
    with socket.create_connection((host, port), timeout=30, source_address=(source, 0)) as sock:
        sock.sendall(_PROTOCOL + bytes(8) + info_hash + b"-ID0000-000000000001")
        answer = sock.recv(68, socket.MSG_WAITALL)
    assert len(answer) in (0, 68) and answer[:20] in (b"", _PROTOCOL), answer
    return len(answer) == 68


def bound_opener(source: str) -> urllib.request.OpenerDirector:
    """A urllib opener (plain http) whose connections leave from the address ``source``."""

    class Handler(urllib.request.HTTPHandler):
        def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
            def connect(host: str, **options: object) -> http.client.HTTPConnection:
                return http.client.HTTPConnection(host, source_address=(source, 0), **options)  # type: ignore[arg-type]

            return self.do_open(connect, req)

    return urllib.request.build_opener(Handler)
