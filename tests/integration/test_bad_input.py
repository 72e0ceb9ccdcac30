"""Bad input at every entry point: the CLI, the tracker's API, the piece server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from shoal.core.bitfield import Bitfield
from shoal.core.manifest import Manifest, OriginIdentity
from shoal.peer.server import PieceServer, ServedTask, ServerConfig
from shoal.testing.hostile import identity
from shoal.testing.poll import DEADLINE, wait_until_async
from shoal.testing.processes import shoal_argv
from tests.integration.conftest import run_get

TASK = "ab" * 20


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["notaurl"], 2, "malformed URL"),
        (["ftp://example.invalid/x"], 2, "only http:// and https://"),
        (["http://127.0.0.1:9/x", "--no-such-flag"], 2, "No such option"),
        (["http://127.0.0.1:9/x", "--download-rate", "10Q"], 2, "unknown unit 'Q'"),
        (["http://127.0.0.1:9/x", "--upload-rate", "fast"], 2, "not a size or rate"),
        (["http://127.0.0.1:9/x", "--digest", "md5:abc"], 2, "--digest md5: takes 32 hex digits, not 3"),
        (["http://127.0.0.1:9/x", "--header", "no colon here"], 2, "malformed header"),
        (["http://127.0.0.1:9/x", "--listen", "nowhere"], 2, "--listen takes HOST:PORT"),
        (["http://127.0.0.1:9/x", "--tracker", "ftp://127.0.0.1:6969"], 2, "is not a tracker's base URL"),
    ],
)
def test_cli_rejects_bad_arguments(tmp_path, args, code, message):
    result = subprocess.run(shoal_argv("get", *args), capture_output=True, text=True, cwd=tmp_path, timeout=30)
    assert result.returncode == code, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr  # one clear line: not click's usage, hint and error
    assert lines[0].startswith("shoal: error: ") and message in lines[0]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["get"], "Missing argument 'URL'. (see 'python -m shoal get --help')"),  # shoal_argv runs python -m
        (["no-such-command"], "No such command 'no-such-command'. (see 'python -m shoal --help')"),
        (["--no-such-flag"], "No such option '--no-such-flag'"),
        (["pool", "create", "x"], "no tracker: give --tracker URL or set $SHOAL_TRACKER (see 'python -m shoal pool"),
    ],
)
def test_cli_usage_errors_are_one_line(tmp_path, args, message):
    result = subprocess.run(shoal_argv(*args), capture_output=True, text=True, cwd=tmp_path, timeout=30)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("shoal: error: ") and message in result.stderr


def test_cli_without_a_command_shows_its_help():
    result = subprocess.run(shoal_argv(), capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.startswith("Usage: ") and "get " in result.stderr and "tracker " in result.stderr


def test_output_into_a_missing_directory(tmp_path):
    result = run_get("http://127.0.0.1:9/x", "-o", str(tmp_path / "missing" / "x"))
    assert result.returncode == 6
    assert result.stderr.strip().count("\n") == 0 and "does not exist" in result.stderr
    assert not (tmp_path / "missing").exists()


@pytest.fixture
def readonly_dir(tmp_path: Path):
    path = tmp_path / "ro"
    path.mkdir()
    if os.geteuid() == 0:
        # root ignores permission bits; a read-only mount is what refuses root's writes.
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)], check=True)
        yield path
        subprocess.run(["umount", str(path)], check=True)
    else:
        path.chmod(0o500)
        yield path
        path.chmod(0o700)


def test_output_into_an_unwritable_directory(readonly_dir, origin, make_file):
    src = origin()
    make_file(src.root / "x.bin", 1 << 20)
    result = run_get(src.url("x.bin"), "-o", str(readonly_dir / "x.bin"))
    assert result.returncode == 6, result.stderr
    assert result.stderr.strip().count("\n") == 0 and "is not writable" in result.stderr
    assert list(readonly_dir.iterdir()) == []


def test_tracker_unreachable_without_and_with_fallback(tmp_path, origin, make_file):
    src = origin()
    data = make_file(src.root / "t.bin", 1 << 20)
    dead = "http://127.0.0.1:9"
    refused = run_get(src.url("t.bin"), "-o", str(tmp_path / "t.bin"), "--tracker", dead)
    assert refused.returncode == 3 and "cannot reach the tracker" in refused.stderr
    assert not (tmp_path / "t.bin").exists()
    fallback = run_get(src.url("t.bin"), "-o", str(tmp_path / "t.bin"), "--tracker", dead, "--fallback")
    assert fallback.returncode == 0, fallback.stderr
    assert (tmp_path / "t.bin").read_bytes() == data


def test_origin_failure_exit_code(tmp_path, origin):
    src = origin()
    result = run_get(src.url("missing.bin"), "-o", str(tmp_path / "m.bin"))
    assert result.returncode == 4 and "404" in result.stderr
    assert list(tmp_path.iterdir()) == [tmp_path / "origin"]


def _post(url: str, body: bytes) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def _get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def _announce(**fields: object) -> bytes:
    me = identity("p1")
    body = {"peer_id": me.peer_id, "secret": me.secret, "url": "http://127.0.0.1:9/f", "port": 7000, **fields}
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (_announce(peer_id=...), 400, "peer_id"),
        (_announce(peer_id="bad id!"), 400, "peer_id"),
        (_announce(port=70000), 400, "port"),
        (_announce(port=True), 400, "port"),
        (_announce(event="exploded"), 400, "event"),
        (_announce(url="file:///etc/passwd"), 400, "url"),
        (_announce(done={"0": "zz"}), 400, "done"),
        (_announce(want_leases=-1), 400, "want_leases"),
        (_announce(released=["a"]), 400, "released"),
        (_announce(origin={"length": -5}), 400, "origin"),
        pytest.param(b'{"x": "' + b"a" * 300_000 + b'"}', 413, "Too Large", id="oversized"),
        # Strings no database stores: each failed its write, and every announce committed beside it.
        (_announce(host="\ud800"), 400, "surrogate"),
        (_announce(url="http://127.0.0.1:9/a\u0000b"), 400, "NUL"),
        (_announce(origin={"length": 5, "etag": '"a\u0001"'}), 400, "control characters"),
        (_announce(origin={"length": 1 << 41}), 400, "<= 1099511627776 - at `$.origin.length`"),
        (_announce(bad_peers=[f"p{i}" for i in range(300)]), 400, "bad_peers"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, 400, "JSON object", id="deep"),
        pytest.param(b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400, "nested too deeply", id="deep-field"),
        pytest.param(b'{"generation": ' + b"9" * 5000 + b"}", 400, "generation", id="huge-int"),
    ],
    ids=lambda value: value.decode()[:40] if isinstance(value, bytes) else None,
)
def test_tracker_rejects_bad_announces(tracker, body, status, message):
    t = tracker()
    code, reply = _post(f"{t.url}/v1/tasks/{TASK}/announce", body)
    assert code == status
    assert message in str(reply["error"])
    # The tracker is still healthy afterwards.
    assert _get(f"{t.url}/v1/health")[0] == 200


def test_tracker_rejects_bad_bitfields_and_unknown_tasks(tracker):
    t = tracker()
    origin = {"length": 10 << 20, "etag": '"v1"'}
    code, reply = _post(f"{t.url}/v1/tasks/{TASK}/announce", _announce(origin=origin))
    assert code == 200 and reply["manifest"]["length"] == 10 << 20  # type: ignore[index]
    generation = reply["generation"]
    for bitfield in ("%%%", "AAAA", Bitfield(41).encode()):
        code, reply = _post(f"{t.url}/v1/tasks/{TASK}/announce", _announce(generation=generation, bitfield=bitfield))
        assert code == 400 and "bitfield" in str(reply["error"])
    code, reply = _post(f"{t.url}/v1/tasks/{TASK}/announce", _announce(generation=generation, done={"99999": "0" * 64}))
    assert code == 400 and "piece 99999" in str(reply["error"])
    for path, status in [
        (f"/v1/tasks/{'cd' * 20}", 404),
        (f"/v1/tasks/{'cd' * 20}/hashes", 404),
        ("/v1/tasks/not-a-task", 400),
        (f"/v1/tasks/{TASK}/hashes?since=abc", 400),
    ]:
        code, reply = _get(f"{t.url}{path}")
        assert (code, type(reply.get("error"))) == (status, str), (path, reply)
    # An announce for a task the tracker has never seen, with a generation it never gave: told to restart.
    code, reply = _post(f"{t.url}/v1/tasks/{'cd' * 20}/announce", _announce(generation=7, bitfield="AAAA"))
    assert (code, reply["restart"], reply["generation"]) == (200, True, 1), reply


async def test_piece_server_serves_only_verified_pieces_of_its_generation(tmp_path):
    manifest = Manifest(OriginIdentity(4 * 256 * 1024), 256 * 1024)
    path = tmp_path / "data"
    payload = os.urandom(manifest.length)
    path.write_bytes(payload)
    server = PieceServer(ServerConfig(max_uploads=1, upload_rate=256 * 1024))
    port = await server.start("127.0.0.1", 0)
    served = server.publish(TASK, 3, manifest, path, Bitfield.of(4, [0, 1]))
    base = f"http://127.0.0.1:{port}/v1/tasks/{TASK}"
    piece = 256 * 1024
    try:
        async with aiohttp.ClientSession() as session:

            async def fetch(url: str, rng: str | None) -> tuple[int, bytes]:
                headers = {"Range": rng} if rng else {}
                async with session.get(url, headers=headers) as r:
                    return r.status, await r.read()

            assert await fetch(f"{base}/data?gen=3", f"bytes=0-{2 * piece - 1}") == (
                206,
                payload[: 2 * piece],
            )
            assert (await fetch(f"{base}/data?gen=3", f"bytes={2 * piece}-{3 * piece - 1}"))[0] == 404
            assert (await fetch(f"{base}/data?gen=2", f"bytes=0-{piece - 1}"))[0] == 409
            assert (await fetch(f"{base}/data?gen=3", "bytes=1-100"))[0] == 416
            assert (await fetch(f"{base}/data?gen=3", None))[0] == 416
            assert (await fetch(f"http://127.0.0.1:{port}/v1/tasks/{'cd' * 20}/data?gen=3", "bytes=0-9"))[0] == 404

            # One upload at a time: while a paced upload holds the only slot, the next asker gets a 503.
            slow = asyncio.ensure_future(fetch(f"{base}/data?gen=3", f"bytes=0-{2 * piece - 1}"))
            await wait_until_async(lambda: server.uploads == 1, "the paced upload to take the slot")
            async with session.get(f"{base}/data?gen=3", headers={"Range": f"bytes=0-{piece - 1}"}) as r:
                assert r.status == 503 and r.headers["Retry-After"] == "1"
            assert (await slow)[0] == 206

            # The have stream: the bitfield first, then each newly verified piece as it happens.
            async with session.get(f"{base}/haves?gen=3") as r:
                first = json.loads(await r.content.readline())
                assert Bitfield.decode(4, first["bitfield"]) == Bitfield.of(4, [0, 1])
                served.add(3)
                update = json.loads(await asyncio.wait_for(r.content.readline(), DEADLINE))
                assert update == {"have": [3]}
    finally:
        await server.stop()


@contextlib.asynccontextmanager
async def have_streams(
    tmp_path: Path, gap: float, count: int = 1
) -> AsyncIterator[tuple[PieceServer, ServedTask, list[aiohttp.ClientResponse]]]:
    """A piece server with a task of 8 pieces, none held, and ``count`` have streams past their bitfield."""
    manifest = Manifest(OriginIdentity(8 * 256 * 1024), 256 * 1024)
    server = PieceServer(ServerConfig(have_gap=gap))
    port = await server.start("127.0.0.1", 0)
    served = server.publish(TASK, 1, manifest, tmp_path / "data", Bitfield(8))
    url = f"http://127.0.0.1:{port}/v1/tasks/{TASK}/haves?gen=1"
    try:
        async with aiohttp.ClientSession() as session, contextlib.AsyncExitStack() as stack:
            streams = [await stack.enter_async_context(session.get(url)) for _ in range(count)]
            for r in streams:
                assert json.loads(await r.content.readline()) == {"bitfield": Bitfield(8).encode()}
            yield server, served, streams
    finally:
        await server.stop()


# A have gap no wait of these tests outlasts: a line that comes was not held back for the gap's end.
LONG_GAP = 2 * DEADLINE


async def next_line(r: aiohttp.ClientResponse, *, pings: bool = False) -> object:
    """The next line of a have stream (skipping pings unless ``pings``); None at its end."""
    while line := await asyncio.wait_for(r.content.readline(), DEADLINE):
        if (message := json.loads(line)) != {"ping": True} or pings:
            return message
    return None


async def test_have_stream_sends_a_quiet_piece_at_once_and_batches_a_stream_of_them(tmp_path):
    # The gap, long enough that piece 1 comes within it even on a busy machine, is how long this test takes.
    async with have_streams(tmp_path, gap=3.0) as (_, served, [r]):
        served.add(0)
        assert await next_line(r) == {"have": [0]}
        # Within the gap of the last line, pieces wait for the gap to end and go out as one line (without the
        # gap, the stream would have written [1] in the loop's next iteration, let run here).
        served.add(1)
        await asyncio.sleep(0)
        served.add(2)
        served.add(5)
        assert await next_line(r) == {"have": [1, 2, 5]}


async def test_have_stream_sends_a_piece_only_we_hold_without_waiting_for_the_gap(tmp_path):
    async with have_streams(tmp_path, gap=LONG_GAP) as (_, served, [r]):
        served.add(0)
        assert await next_line(r) == {"have": [0]}
        served.add(1)  # from a peer: waits for the gap...
        await asyncio.sleep(0)  # (the loop's next iteration would send a piece due at once)
        served.add(2, at_once=True)  # ...until one from the origin comes, and both go at once
        assert await next_line(r) == {"have": [1, 2]}  # before the deadline: long before the gap's end


async def test_have_stream_pings_when_quiet_and_ends_after_the_pieces_not_yet_told(tmp_path, monkeypatch):
    monkeypatch.setattr("shoal.peer.server.PING_SECONDS", 0.2)
    async with have_streams(tmp_path, gap=LONG_GAP, count=2) as (server, served, streams):
        for r in streams:  # nothing verified for a while: a ping on every stream
            assert await next_line(r, pings=True) == {"ping": True}
        served.add(0)  # a ping does not open a have gap: sent at once
        for r in streams:
            assert await next_line(r) == {"have": [0]}
        served.add(4)  # within the (long) gap: held back...
        server.withdraw(TASK)  # ...until the task is withdrawn, which tells it and ends the streams
        for r in streams:
            assert await next_line(r) == {"have": [4]}
            assert await next_line(r) is None
    assert served.watchers == set()


async def test_piece_server_sends_a_run_with_its_range_and_frees_the_slot_when_the_file_is_gone(tmp_path):
    piece = 256 * 1024
    manifest = Manifest(OriginIdentity(3 * piece + 1000), piece)
    path = tmp_path / "data"
    payload = os.urandom(manifest.length)
    path.write_bytes(payload)
    server = PieceServer(ServerConfig(max_uploads=1))
    port = await server.start("127.0.0.1", 0)
    server.publish(TASK, 1, manifest, path, Bitfield.of(4, range(4)))
    url = f"http://127.0.0.1:{port}/v1/tasks/{TASK}/data?gen=1"
    try:
        async with aiohttp.ClientSession() as session:
            # The last run ends with the short last piece: Content-Range names the file's real length.
            async with session.get(url, headers={"Range": f"bytes={2 * piece}-{manifest.length - 1}"}) as r:
                assert r.status == 206
                assert r.headers["Content-Range"] == f"bytes {2 * piece}-{manifest.length - 1}/{manifest.length}"
                assert r.headers["Content-Type"] == "application/octet-stream"
                assert await r.read() == payload[2 * piece :]
            # The file vanishes under a served task (evicted): a 404, and the only upload slot is free again.
            path.unlink()
            for _ in range(2):
                async with session.get(url, headers={"Range": f"bytes=0-{piece - 1}"}) as r:
                    assert r.status == 404 and "Content-Range" not in r.headers
                    assert await r.read() == b""
            path.write_bytes(payload)
            async with session.get(url, headers={"Range": f"bytes={piece}-{2 * piece - 1}"}) as r:
                assert r.status == 206 and await r.read() == payload[piece : 2 * piece]
            assert server.uploads == 0
    finally:
        await server.stop()
