"""The part file: pieces written as buffers, the sidecar, resuming, and moving into place."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from shoal.core.errors import LocalIOError
from shoal.core.manifest import Manifest, OriginIdentity
from shoal.peer.body import PieceReader
from shoal.storage.partfile import PartFile, piece_hash
from shoal.testing.http import serving

PIECE = 256 * 1024
MANIFEST = Manifest(OriginIdentity(3 * PIECE + 1000, etag='"v1"'), PIECE)


def pieces(data: bytes) -> list[bytes]:
    return [data[i : i + PIECE] for i in range(0, len(data), PIECE)]


@pytest.fixture
def data() -> bytes:
    return os.urandom(MANIFEST.length)


def test_pieces_written_as_many_buffers_land_at_their_offsets(tmp_path: Path, data: bytes) -> None:
    part = PartFile(tmp_path / "f.bin", "t" * 40, MANIFEST)
    part.open()
    for index, piece in enumerate(pieces(data)):
        # More buffers than one pwritev takes, of uneven sizes, some of them memoryviews.
        view = memoryview(piece)
        buffers = [view[i : i + 97] for i in range(0, len(piece), 97)]
        part.write(index, buffers)
    assert piece_hash(buffers) == piece_hash(pieces(data)[-1])
    part.sync()
    assert part.move_into_place() == tmp_path / "f.bin"
    part.close()
    assert (tmp_path / "f.bin").read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


def test_a_rerun_keeps_only_pieces_whose_bytes_still_match(tmp_path: Path, data: bytes) -> None:
    dest = tmp_path / "f.bin"
    part = PartFile(dest, "t" * 40, MANIFEST)
    part.open()
    for index in (0, 1, 3):
        part.write(index, [pieces(data)[index]])
    part.save_state({i: piece_hash(pieces(data)[i]) for i in (0, 1, 3)})
    part.close()
    # Piece 1 rots on disk after its hash was recorded.
    with open(part.path, "r+b") as f:
        f.seek(PIECE + 10)
        f.write(b"\0\1\2")
    resumed = PartFile(dest, "t" * 40, MANIFEST).open()
    assert sorted(resumed.have) == [0, 3]
    assert set(resumed.hashes) == {0, 3}


def test_a_second_download_to_the_same_destination_at_once_is_refused(tmp_path: Path, data: bytes) -> None:
    dest = tmp_path / "f.bin"
    first = PartFile(dest, "t" * 40, MANIFEST)
    first.open()
    first.write(0, [pieces(data)[0]])
    # A second process (or a second open: each has its own open file description) finds no sidecar yet:
    # it would truncate the part file under the first one's written pieces.
    second = PartFile(dest, "t" * 40, MANIFEST)
    with pytest.raises(LocalIOError, match="another download is writing"):
        second.open()
    assert first.read(0) == pieces(data)[0]
    first.close()
    third = PartFile(dest, "t" * 40, MANIFEST)
    third.open()  # the lock went with the first one's close
    third.close()


def test_a_sidecar_for_another_version_is_ignored(tmp_path: Path, data: bytes) -> None:
    dest = tmp_path / "f.bin"
    part = PartFile(dest, "t" * 40, MANIFEST)
    part.open()
    part.write(0, [pieces(data)[0]])
    part.save_state({0: piece_hash(pieces(data)[0])})
    part.close()
    changed = Manifest(OriginIdentity(MANIFEST.length, etag='"v2"'), PIECE)
    other = PartFile(dest, "t" * 40, changed)
    assert len(other.open().have) == 0
    other.close()
    # A corrupt sidecar is ignored too, never an error.
    part.state.write_text("{not json")
    again = PartFile(dest, "t" * 40, MANIFEST)
    assert len(again.open().have) == 0
    again.close()


def test_a_file_whose_origin_names_no_version_is_never_resumed(tmp_path: Path, data: bytes) -> None:
    dest = tmp_path / "f.bin"
    unversioned = Manifest(OriginIdentity(MANIFEST.length), PIECE)  # no ETag, no Last-Modified
    part = PartFile(dest, "t" * 40, unversioned)
    part.open()
    part.write(0, [pieces(data)[0]])
    part.save_state({0: piece_hash(pieces(data)[0])})
    part.close()
    # The origin's file may have changed at the same length since: nothing tells, so nothing is kept.
    again = PartFile(dest, "t" * 40, unversioned)
    assert len(again.open().have) == 0
    again.close()


def test_unwritable_directory_is_a_local_io_error(tmp_path: Path) -> None:
    with pytest.raises(LocalIOError) as info:
        PartFile(tmp_path / "missing" / "f.bin", "t" * 40, MANIFEST).open()
    assert "missing" in str(info.value) and info.value.path


async def test_piece_reader_splits_a_body_at_piece_boundaries(data: bytes) -> None:
    async def odd_chunks(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for start in range(0, len(data), 70_001):  # chunks that straddle piece boundaries
            await response.write(data[start : start + 70_001])
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/", odd_chunks)
    async with serving(app) as base, aiohttp.ClientSession() as session, session.get(f"{base}/") as resp:
        reader = PieceReader(resp.content)
        for index, expected in enumerate(pieces(data)):
            got = await reader.read(MANIFEST.piece_size(index))
            assert b"".join(bytes(b) for b in got) == expected
        with pytest.raises(Exception, match="bytes read"):
            await reader.read(1)


def test_close_waits_for_a_worker_thread_still_using_the_file(tmp_path: Path) -> None:
    """A fetch cancelled while its thread writes or reads does not stop the thread: closing the part file
    must wait for it, or its bytes could land in whatever file reuses the descriptor's number."""
    part = PartFile(tmp_path / "out.bin", "ab" * 20, MANIFEST)
    part.open()
    part.write(0, [os.urandom(PIECE)])
    inside, go_on = threading.Event(), threading.Event()

    class SlowHasher:
        def update(self, data: bytes, /) -> object:
            inside.set()
            go_on.wait(5)
            return None

    reader = threading.Thread(target=part.feed, args=(0, 1, [SlowHasher()]))
    reader.start()
    assert inside.wait(5)
    closer = threading.Thread(target=part.close)
    closer.start()
    closer.join(0.2)
    assert closer.is_alive() and part.is_open  # held back while the read is in progress
    go_on.set()
    reader.join(5)
    closer.join(5)
    assert not part.is_open
    with pytest.raises(RuntimeError, match="not open"):
        part.write(1, [os.urandom(PIECE)])  # and nothing can start another one


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_close_overtaking_an_open_in_progress_closes_the_file(
    tmp_path: Path, data: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A download cancelled while its thread opens and re-hashes the part file closes it meanwhile: the open
    stops at the next piece and no descriptor is left behind."""
    dest = tmp_path / "f.bin"
    first = PartFile(dest, "t" * 40, MANIFEST)
    first.open()
    for index, piece in enumerate(pieces(data)):
        first.write(index, [piece])
    first.save_state({i: piece_hash(p) for i, p in enumerate(pieces(data))})
    first.close()

    hashing, go_on = threading.Event(), threading.Event()
    real_hash = piece_hash

    def slow_hash(buffers: object) -> str:
        hashing.set()
        go_on.wait(5)
        return real_hash(buffers)  # type: ignore[arg-type]

    monkeypatch.setattr("shoal.storage.partfile.piece_hash", slow_hash)
    before = _open_fds()
    part = PartFile(dest, "t" * 40, MANIFEST)
    failure: list[BaseException] = []

    def opening() -> None:
        try:
            part.open()
        except BaseException as exc:
            failure.append(exc)

    opener = threading.Thread(target=opening)
    opener.start()
    assert hashing.wait(5)
    part.close()
    go_on.set()
    opener.join(5)
    assert isinstance(failure[0], RuntimeError)
    assert not part.is_open and _open_fds() == before


def test_an_open_after_close_opens_nothing(tmp_path: Path) -> None:
    part = PartFile(tmp_path / "f.bin", "t" * 40, MANIFEST)
    before = _open_fds()
    part.close()  # the caller was cancelled before the thread started
    with pytest.raises(RuntimeError, match="closed"):
        part.open()
    assert not part.is_open and _open_fds() == before
