"""The test origin's request log (``--log-requests``), which the labs use to count the bytes of each piece
that left the origin: one line per file request once it has ended, with the byte range it asked for."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable
from pathlib import Path

from tests.integration.conftest import Origin


def test_each_request_is_logged_with_its_range_once_it_ends(
    origin: Callable[..., Origin], make_file: Callable[[Path, int], bytes]
) -> None:
    server = origin("--log-requests")
    data = make_file(server.root / "f.bin", 100_000)
    ranged = urllib.request.Request(server.url("f.bin"), headers={"Range": "bytes=1000-4999"})
    with urllib.request.urlopen(ranged, timeout=10) as response:
        assert response.read() == data[1000:5000]
    with urllib.request.urlopen(server.url("f.bin"), timeout=10) as response:
        assert response.read() == data
    stdout = server.service.proc.stdout
    assert stdout is not None
    lines = [stdout.readline().split() for _ in range(2)]
    assert [line[:5] for line in lines] == [
        ["request", "127.0.0.1", "1000-5000", "206", "complete"],
        ["request", "127.0.0.1", "0-100000", "200", "complete"],
    ]
    for line in lines:
        assert len(line) == 7 and float(line[5]) <= float(line[6])
