"""The node cache on disk (storage.cache_store over storage.cache_index, with storage.cache_reconcile and
storage.cache_sync): entering, evicting, verifying, placing, reconciling and syncing, against real files and
SQLite."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import random
import stat
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import blake3
import pytest

from shoal.core.cache_export import ExportedFile, parse_export
from shoal.core.cloud_manager_dump import KnownFile
from shoal.core.errors import CacheError, CacheFull, IntegrityError, LocalIOError, NotInCache, UsageError
from shoal.storage import cache_store, cache_sync
from shoal.storage.cache_index import CacheEntry, SeededTask
from shoal.storage.cache_reconcile import ORPHAN_GRACE_SECONDS, STAGING_MAX_AGE, reconcile
from shoal.storage.cache_store import CacheStore, stat_key
from shoal.testing.clock import FakeClock

CAP = 1000  # bytes: the high watermark is 950, the low 850
NODE = "http://10.0.0.5:7000/"
ORIGIN = "http://origin.example/release.tar"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


OpenStore = Callable[..., CacheStore]


@pytest.fixture
def open_store(tmp_path: Path, clock: FakeClock) -> Iterator[OpenStore]:
    """Open a store (closed at teardown); by default all share one index and storage directory."""
    with contextlib.ExitStack() as stack:

        def open_(
            capacity: int | None = CAP,
            *,
            storage: Path | None = None,
            index: Path | None = None,
            clock_: Callable[[], float] = clock,
        ) -> CacheStore:
            store = CacheStore(index or tmp_path / "index.db", storage or tmp_path / "cache", capacity, clock=clock_)
            return stack.enter_context(store)

        yield open_


@pytest.fixture
def store(open_store: OpenStore) -> CacheStore:
    return open_store()


MakeFile = Callable[..., Path]


@pytest.fixture
def make_file(tmp_path: Path) -> MakeFile:
    """Write a source file of random (so distinct) bytes, or of the given ones."""
    (tmp_path / "src").mkdir()
    counter = iter(range(1_000_000))

    def make(size: int = 100, *, data: bytes | None = None, name: str | None = None) -> Path:
        path = tmp_path / "src" / (name or f"file{next(counter)}.bin")
        path.write_bytes(os.urandom(size) if data is None else data)
        return path

    return make


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """Mount a small tmpfs (a filesystem of its own, with a size limit); unmounted at teardown. Skipped where
    mounting is not allowed, except under CI, where it must work."""
    mounted: list[Path] = []

    def mount(name: str, size: str = "1m") -> Path:
        where = tmp_path / name
        where.mkdir()
        try:
            result = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True, text=True
            )
            problem = result.stderr.strip() if result.returncode else ""
        except OSError as exc:
            problem = str(exc)
        if problem:
            if os.environ.get("CI") == "true":
                pytest.fail(f"cannot mount a tmpfs under CI: {problem}")
            pytest.skip(f"cannot mount a tmpfs here (needs root): {problem}")
        mounted.append(where)
        return where

    yield mount
    for where in reversed(mounted):
        subprocess.run(["umount", str(where)], check=True)


def object_files(store: CacheStore) -> dict[str, int]:
    """The object files on disk: name -> size."""
    return {p.name: p.stat().st_size for p in store.objects.glob("*/*")}


def staged(store: CacheStore) -> list[str]:
    return sorted(p.name for p in store.staging.iterdir())


def assert_consistent(store: CacheStore) -> None:
    """The index and the disk agree: every cached entry has its object file, nothing else is there, and the
    usage is their sum, within the capacity."""
    usage = store.usage()
    cached = {e.digest: e.size for e in store.entries() if e.cached}
    assert object_files(store) == cached
    assert usage.used == sum(cached.values()) and usage.files == len(cached)
    assert usage.used + usage.reserved <= usage.capacity


def flip_a_byte(path: Path, offset: int = 0) -> os.stat_result:
    """Flip one bit of a cached object the way a stray write would, then put its mode and mtime back: only the
    content and the ctime (which no one can set) differ. Returns the stat from before."""
    before = path.stat()
    path.chmod(0o644)
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))
    path.chmod(0o444)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns, stat.S_IMODE(after.st_mode)) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
        0o444,
    )
    # The verification relies on the kernel giving the write a new ctime (fine-grained timestamps; a
    # kernel with coarse ones may repeat a ctime within one tick, which would hide this write).
    assert after.st_ctime_ns != before.st_ctime_ns, "the write left the ctime unchanged"
    return before


def age(path: Path, seconds: float) -> None:
    then = path.stat().st_mtime - seconds
    os.utime(path, (then, then))


# -- entering and looking up ---------------------------------------------------------------------------


def test_put_records_the_blake3_and_sha256_of_the_bytes(
    store: CacheStore, make_file: MakeFile, clock: FakeClock
) -> None:
    data = os.urandom(300)
    src = make_file(data=data, name="release.tar")
    entry = store.put(src, sources=["HTTP://Origin.Example:80/release.tar"])
    assert entry.digest == blake3.blake3(data).hexdigest()
    assert entry.sha256 == hashlib.sha256(data).hexdigest()
    assert (entry.size, entry.name, entry.cached, entry.pinned) == (300, "release.tar", True, False)
    assert not entry.in_use
    assert entry.added == entry.last_access == clock.now
    assert entry.sources == (ORIGIN,)
    path = store.storage / "objects" / entry.digest[:2] / entry.digest
    assert path == store.object_path(entry.digest)
    assert path.read_bytes() == data
    assert stat.S_IMODE(path.stat().st_mode) == 0o444
    assert entry.verified_stat == stat_key(path.stat())
    assert src.read_bytes() == data  # the source is copied, not moved
    assert staged(store) == []
    assert store.usage().used == 300 and store.usage().reserved == 0 and store.usage().files == 1
    assert store.by_url("http://origin.example/release.tar") == entry
    assert_consistent(store)


def test_put_takes_a_name_and_a_pin(store: CacheStore, make_file: MakeFile) -> None:
    entry = store.put(make_file(10), name="other name", pin=True)
    assert entry.name == "other name" and entry.pinned


def test_an_empty_file_can_be_cached(store: CacheStore, make_file: MakeFile) -> None:
    entry = store.put(make_file(data=b""))
    assert entry.digest == blake3.blake3(b"").hexdigest() and entry.size == 0
    with store.using(entry.digest) as (_, path):
        assert path.read_bytes() == b""


def test_lookup_by_bare_digest_blake3_and_sha256_ids(store: CacheStore, make_file: MakeFile) -> None:
    entry = store.put(make_file(50))
    for ident in (
        entry.digest,
        f"blake3:{entry.digest}",
        f"sha256:{entry.sha256}",
        entry.digest.upper(),
        f"SHA256:{entry.sha256.upper()}",
        f"  {entry.digest}\n",
    ):
        assert store.lookup(ident) == entry, ident
        assert store.entry(ident) == entry
        assert store.cached(ident) == entry
    unknown = "0" * 64
    assert store.lookup(unknown) is None and store.lookup(f"sha256:{unknown}") is None
    with pytest.raises(NotInCache, match="no cache entry"):
        store.entry(unknown)
    # A sha256 is not a cache id on its own: bare hex is always read as BLAKE3.
    assert store.lookup(entry.sha256) is None


def test_an_id_may_be_shortened_to_a_unique_prefix_of_8_hex_digits(store: CacheStore, make_file: MakeFile) -> None:
    entry = store.put(make_file(50))
    for ident in (
        entry.digest[:8],
        entry.digest[:16],  # what `shoal cache ls` shows
        entry.digest[:63],
        f"blake3:{entry.digest[:12]}",
        f"sha256:{entry.sha256[:8]}",
        entry.digest[:10].upper(),
    ):
        assert store.lookup(ident) == entry, ident
    assert store.cached(entry.digest[:8]) == entry
    store.pin(entry.digest[:8])
    assert store.entry(entry.digest).pinned
    other = "f" * 8 if not entry.digest.startswith("f" * 8) else "0" * 8
    assert store.lookup(other) is None


def test_an_ambiguous_prefix_is_refused_naming_the_candidates(store: CacheStore) -> None:
    # Known entries (as an import records them) whose ids share their first 10 hex digits.
    shared = "ab12cd34ef"
    ids = [shared + c * 54 for c in "0123456"] + [shared + "99" + c * 52 for c in "01"]
    cache_sync.import_files(store, [ExportedFile(d, f"f{i}", 10, "", 1.0, (), ()) for i, d in enumerate(ids)])
    with pytest.raises(UsageError) as info:
        store.lookup(shared)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"ambiguous id '{shared}': it begins ")
    assert (
        all(d in message for d in ids[:4]) and ids[4] not in message and message.endswith("and more; give more digits")
    )
    with pytest.raises(UsageError, match="ambiguous"):
        store.entry(shared[:8])
    pair = f"{shared}99"
    with pytest.raises(UsageError, match=f"^ambiguous id '{pair}': it begins {ids[7]}, {ids[8]}; give more digits$"):
        store.lookup(pair)
    assert store.lookup(f"{shared}2") == store.entry(ids[2])


@pytest.mark.parametrize(
    "ident",
    [
        "",
        "abc",
        "0" * 7,
        "0" * 65,
        "g" * 64,
        "0" * 7 + "g",
        "md5:" + "0" * 64,
        "sha1:" + "0" * 64,
        "blake3:" + "0" * 7,
        "sha256:" + "0" * 7,
        "sha256:",
        "blake3:sha256:" + "0" * 64,
        "0" * 32 + " " + "0" * 31,
    ],
)
def test_a_malformed_id_is_a_usage_error(store: CacheStore, ident: str) -> None:
    with pytest.raises(UsageError, match="not a cache id"):
        store.lookup(ident)
    with pytest.raises(UsageError):
        store.place(ident, store.storage / "nowhere")


def test_put_of_something_that_is_not_a_regular_file_is_refused(store: CacheStore, tmp_path: Path) -> None:
    with pytest.raises(LocalIOError, match="cannot read"):
        store.put(tmp_path / "missing")
    with pytest.raises(UsageError, match="not a regular file"):
        store.put(tmp_path)
    assert store.entries() == [] and staged(store) == []


def test_a_bad_source_url_stores_nothing(store: CacheStore, make_file: MakeFile) -> None:
    with pytest.raises(UsageError, match="malformed URL"):
        store.put(make_file(100), sources=["ftp://origin.example/release.tar"])
    assert store.entries() == []
    assert object_files(store) == {} and staged(store) == []
    assert store.usage().used == store.usage().reserved == 0


def test_a_capacity_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="must be positive"):
        CacheStore(tmp_path / "index.db", tmp_path / "cache", 0)


def test_the_capacity_is_kept_in_the_index(open_store: OpenStore) -> None:
    assert open_store(5000).capacity == 5000
    # Opened again without one (the CLI, the Python API), the cache keeps the capacity it was given.
    assert open_store(None).capacity == 5000
    assert open_store(None).usage().capacity == 5000


def test_a_changed_capacity_is_logged_with_the_old_and_the_new(
    open_store: OpenStore, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="shoal.cache"):
        store = open_store(300 << 20)  # a new cache: nothing to change
        open_store(300 << 20)
        open_store(None)
        assert caplog.records == []
        assert open_store(20 << 30).capacity == 20 << 30
    (record,) = caplog.records
    assert record.levelname == "WARNING"
    assert record.getMessage() == f"cache {store.storage}: capacity changed from 300.0 MiB to 20.0 GiB"


# -- space: eviction and the capacity ------------------------------------------------------------------


def test_least_recently_used_entries_are_evicted_past_the_high_watermark(
    store: CacheStore, make_file: MakeFile, clock: FakeClock
) -> None:
    first, second, third, fourth = (store.put(make_file(200)) for _ in range(4))
    for entry in (first, second, third, fourth):
        clock.advance()
        store.index.touch(entry.digest, clock.now)
    # Using the oldest makes it the most recent.
    clock.advance()
    with store.using(first.digest):
        pass
    assert store.entry(first.digest).last_access == clock.now
    # 800 + 100 = 900 stays under 950: nothing goes.
    clock.advance()
    fifth = store.put(make_file(100))
    assert all(store.entry(e.digest).cached for e in (first, second, third, fourth))
    # 900 + 250 = 1150 is past 950: the least recently used go until it is at most 850.
    clock.advance()
    sixth = store.put(make_file(250))
    cached = {e.digest for e in store.entries() if e.cached}
    assert cached == {first.digest, fourth.digest, fifth.digest, sixth.digest}
    assert not store.object_path(second.digest).exists() and not store.object_path(third.digest).exists()
    gone = store.entry(second.digest)
    assert not gone.cached and gone.verified_stat == ""  # the entry stays known, to be fetched again
    assert store.usage().used == 750
    assert_consistent(store)


def test_pinned_entries_are_never_evicted(store: CacheStore, make_file: MakeFile, clock: FakeClock) -> None:
    pinned = [store.put(make_file(150), pin=True) for _ in range(2)]
    for _ in range(20):
        clock.advance()
        store.put(make_file(200))
        assert all(store.entry(p.digest).cached for p in pinned)
        assert_consistent(store)
    for entry in pinned:
        assert store.object_path(entry.digest).exists()
    # Once unpinned, they are the least recently used, and go first.
    for entry in pinned:
        store.pin(entry.digest, False)
    clock.advance()
    store.put(make_file(400))
    assert not any(store.entry(p.digest).cached for p in pinned)


def test_entries_in_use_are_never_evicted(store: CacheStore, make_file: MakeFile, clock: FakeClock) -> None:
    old, newer = store.put(make_file(450)), store.put(make_file(450))
    store.index.touch(old.digest, clock.advance())
    store.index.touch(newer.digest, clock.advance())
    with store.using(old.digest) as (_, path):
        assert store.entry(old.digest).in_use
        clock.advance()
        store.put(make_file(100))
        assert path.exists() and store.entry(old.digest).cached
        assert not store.entry(newer.digest).cached
    assert not store.entry(old.digest).in_use


def test_pinned_entries_holding_the_space_leave_no_room(store: CacheStore, make_file: MakeFile) -> None:
    for _ in range(3):
        store.put(make_file(300), pin=True)
    small = store.put(make_file(50))
    before = store.entries()
    # 950 + 120 needs 70 freed to fit at all; only the 50 bytes of the small entry may go.
    with pytest.raises(CacheFull, match="pinned, in use or being downloaded"):
        store.put(make_file(120))
    assert store.entries() == before and store.entry(small.digest).cached
    assert staged(store) == []
    assert_consistent(store)


def test_a_file_larger_than_the_capacity_is_refused_with_nothing_evicted(
    store: CacheStore, make_file: MakeFile
) -> None:
    for _ in range(3):
        store.put(make_file(300))
    before, files_before = store.entries(), object_files(store)
    with pytest.raises(CacheFull, match="larger than the cache's capacity") as info:
        store.put(make_file(CAP + 1))
    assert (info.value.size, info.value.capacity) == (CAP + 1, CAP)
    assert store.entries() == before
    assert object_files(store) == files_before
    assert staged(store) == []
    assert store.usage().reserved == 0
    # Exactly the capacity fits, evicting all the rest.
    store.put(make_file(CAP))
    assert store.usage().used == CAP and store.usage().files == 1
    assert_consistent(store)


def test_usage_never_goes_above_the_capacity_through_a_churn_of_puts(
    store: CacheStore, make_file: MakeFile, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(7)
    adopt = store.adopt
    peak = 0

    def checking_adopt(*args: Any, **kwargs: Any) -> CacheEntry:
        # Between the reservation and the entry: the copy is on disk, its bytes promised but not yet used.
        nonlocal peak
        usage = store.usage()
        assert usage.reserved > 0
        assert usage.used + usage.reserved <= CAP
        peak = max(peak, usage.used + usage.reserved)
        return adopt(*args, **kwargs)

    monkeypatch.setattr(store, "adopt", checking_adopt)
    refused = 0
    for _ in range(120):
        clock.advance()
        if rng.random() < 0.3:
            # Reading some entries keeps them recent.
            for entry in rng.sample(store.entries(), k=min(2, len(store.entries()))):
                if entry.cached:
                    with store.using(entry.digest):
                        pass
        if rng.random() < 0.1:
            for entry in store.entries():
                if entry.pinned:
                    store.pin(entry.digest, False)
        before = store.entries()
        try:
            store.put(make_file(rng.randint(0, 400)), pin=rng.random() < 0.08)
        except CacheFull:
            refused += 1
            assert store.entries() == before
        usage = store.usage()
        assert usage.used + usage.reserved <= usage.capacity
        assert usage.reserved == 0
        assert_consistent(store)
    assert peak > 950  # the churn did run the cache full
    assert len(store.entries()) > 50 and store.usage().files < 20


def test_a_reservation_holds_space_until_it_ends(store: CacheStore, make_file: MakeFile, clock: FakeClock) -> None:
    old = store.put(make_file(400))
    clock.advance()
    with store.reserve(500) as reservation:
        assert reservation > 0
        assert store.usage().reserved == 500
        # 400 + 500 + 100 = 1000 > 950: the download's promise makes the old entry go.
        clock.advance()
        store.put(make_file(100))
        assert not store.entry(old.digest).cached
        # 600 + 501 does not fit even with every unpinned entry gone: the promise is not evictable.
        with pytest.raises(CacheFull):
            store.put(make_file(501))
    assert store.usage().reserved == 0


def test_disk_full_leaves_no_entry_and_no_staging_file(
    open_store: OpenStore, make_file: MakeFile, tmpfs: Callable[..., Path]
) -> None:
    storage = tmpfs("small", "1m")
    store = open_store(64 << 20, storage=storage)  # the capacity promises more than the disk has
    small = store.put(make_file(1000))
    before, usage_before = store.entries(), store.usage()
    with pytest.raises(LocalIOError, match="disk is full") as info:
        store.put(make_file(2 << 20))
    assert info.value.path.endswith(".bin")
    assert store.entries() == before and store.lookup(small.digest) == small
    assert staged(store) == []
    assert store.usage() == usage_before
    assert_consistent(store)
    # The space is back: a file that fits goes in.
    store.put(make_file(200_000))
    assert store.usage().files == 2


# -- verification ------------------------------------------------------------------------------------


@pytest.mark.parametrize("use", ["using", "place"])
def test_a_flipped_bit_is_never_served(store: CacheStore, make_file: MakeFile, tmp_path: Path, use: str) -> None:
    data = os.urandom(600)
    entry = store.put(make_file(data=data), sources=[ORIGIN])
    other = store.put(make_file(300))
    flip_a_byte(store.object_path(entry.digest), 345)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(NotInCache, match="damaged on disk") as info:
        if use == "using":
            with store.using(entry.digest):
                pytest.fail("damaged bytes were handed out")
        else:
            store.place(entry.digest, out / "release.tar")
    assert info.value.digest == entry.digest
    assert list(out.iterdir()) == []
    assert not store.object_path(entry.digest).exists()
    known = store.entry(entry.digest)
    assert not known.cached and not known.in_use and known.sources == (ORIGIN,)
    assert store.by_url(ORIGIN) is None  # a URL lookup finds no copy to serve
    with pytest.raises(NotInCache, match="known but not on this node's disk"):
        store.cached(entry.digest)
    assert store.entry(other.digest).cached
    assert_consistent(store)
    # Fetched again, it is whole and cached under the same id.
    again = store.put(make_file(data=data), sources=[ORIGIN])
    assert again.digest == entry.digest and again.cached
    with store.using(entry.digest) as (_, path):
        assert path.read_bytes() == data


def test_an_unchanged_file_is_not_hashed_again(
    store: CacheStore, make_file: MakeFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = store.put(make_file(200))

    def no_hashing(*args: Any, **kwargs: Any) -> tuple[str, str]:
        raise AssertionError("hashed a file whose stat had not changed")

    monkeypatch.setattr(cache_store, "hash_content", no_hashing)
    with store.using(entry.digest) as (used, path):
        assert used.digest == entry.digest and path == store.object_path(entry.digest)


def test_a_missing_object_is_noticed_on_use(store: CacheStore, make_file: MakeFile) -> None:
    entry = store.put(make_file(200), sources=[ORIGIN])
    store.object_path(entry.digest).unlink()
    with pytest.raises(NotInCache), store.using(entry.digest):
        pytest.fail("a missing file was handed out")
    assert not store.entry(entry.digest).cached and store.entry(entry.digest).sources == (ORIGIN,)
    assert store.usage().used == 0


def test_scrub_catches_damage_that_left_the_stat_alone(store: CacheStore, make_file: MakeFile) -> None:
    damaged, intact = store.put(make_file(400)), store.put(make_file(300))
    path = store.object_path(damaged.digest)
    flip_a_byte(path, 399)
    # Damage below the filesystem (the disk's own bit rot) leaves the stat as it was: pretend the recorded
    # stat is the current one, so only a whole hash can tell.
    store.index.set_verified(damaged.digest, stat_key(path.stat()))
    with store.using(damaged.digest):
        pass  # the cheap check is fooled
    assert store.scrub() == [damaged.digest]
    assert not path.exists() and not store.entry(damaged.digest).cached
    assert store.entry(intact.digest).cached
    assert store.scrub() == []


def test_scrub_catches_a_flipped_bit(store: CacheStore, make_file: MakeFile) -> None:
    entries = [store.put(make_file(100)) for _ in range(3)]
    flip_a_byte(store.object_path(entries[1].digest), 50)
    assert store.scrub() == [entries[1].digest]
    assert [e.cached for e in (store.entry(e.digest) for e in entries)] == [True, False, True]
    assert_consistent(store)


# -- placing -------------------------------------------------------------------------------------------


def test_place_hard_links_on_the_same_filesystem(
    store: CacheStore, make_file: MakeFile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(500)
    entry = store.put(make_file(data=data))
    out = tmp_path / "out"
    out.mkdir()
    placed, linked = store.place(f"sha256:{entry.sha256}", out / "release.tar")
    assert linked and placed.digest == entry.digest
    obj = store.object_path(entry.digest).stat()
    dest = (out / "release.tar").stat()
    assert (dest.st_ino, dest.st_dev) == (obj.st_ino, obj.st_dev) and obj.st_nlink == 2
    assert (out / "release.tar").read_bytes() == data
    assert sorted(p.name for p in out.iterdir()) == ["release.tar"]
    assert not store.entry(entry.digest).in_use
    # The link changed the object's ctime; the store recorded it, so the next use does not hash again.
    assert store.entry(entry.digest).verified_stat == stat_key(obj)
    monkeypatch.setattr(cache_store, "hash_content", lambda *a, **k: pytest.fail("hashed again after a link"))
    with store.using(entry.digest):
        pass


def test_place_replaces_an_existing_destination(store: CacheStore, make_file: MakeFile, tmp_path: Path) -> None:
    data = os.urandom(100)
    entry = store.put(make_file(data=data))
    dest = tmp_path / "release.tar"
    dest.write_bytes(b"an older version")
    assert store.place(entry.digest, dest)[1]
    assert dest.read_bytes() == data


def test_placing_twice_at_one_destination_leaves_no_temporary_file(
    store: CacheStore, make_file: MakeFile, tmp_path: Path
) -> None:
    # The second link's temporary name and the destination are the same inode: rename(2) then does nothing
    # and leaves the temporary name behind.
    entry = store.put(make_file(100))
    out = tmp_path / "out"
    out.mkdir()
    for _ in range(2):
        assert store.place(entry.digest, out / "release.tar")[1]
    assert sorted(p.name for p in out.iterdir()) == ["release.tar"]
    assert store.object_path(entry.digest).stat().st_nlink == 2


def test_place_copies_when_the_destination_is_on_another_filesystem(
    store: CacheStore, make_file: MakeFile, tmpfs: Callable[..., Path]
) -> None:
    data = os.urandom(800)
    entry = store.put(make_file(data=data))
    out = tmpfs("elsewhere", "1m")
    placed, linked = store.place(entry.digest, out / "release.tar")
    assert not linked and placed.digest == entry.digest
    dest = (out / "release.tar").stat()
    assert dest.st_dev != store.object_path(entry.digest).stat().st_dev
    assert (out / "release.tar").read_bytes() == data
    assert stat.S_IMODE(dest.st_mode) == 0o644  # a copy is the user's to change
    assert [p.name for p in out.iterdir()] == ["release.tar"]
    assert store.object_path(entry.digest).stat().st_nlink == 1


def test_place_copies_when_the_link_is_refused(
    store: CacheStore, make_file: MakeFile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(500)
    entry = store.put(make_file(data=data))

    def refuse(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(cache_store.os, "link", refuse)
    dest = tmp_path / "release.tar"
    assert store.place(entry.digest, dest) == (entry, False)
    assert dest.read_bytes() == data and dest.stat().st_ino != store.object_path(entry.digest).stat().st_ino
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".release.tar")) == []


def test_place_into_a_missing_directory_fails_cleanly(store: CacheStore, make_file: MakeFile, tmp_path: Path) -> None:
    entry = store.put(make_file(100))
    with pytest.raises(LocalIOError, match="cannot write") as info:
        store.place(entry.digest, tmp_path / "no" / "such" / "dir" / "f")
    assert info.value.path.endswith("f")
    assert store.entry(entry.digest).cached and not store.entry(entry.digest).in_use


def test_place_of_an_entry_not_on_disk(store: CacheStore, tmp_path: Path) -> None:
    with pytest.raises(NotInCache):
        store.place("ab" * 32, tmp_path / "f")
    assert not (tmp_path / "f").exists()


# -- managing ------------------------------------------------------------------------------------------


def test_evict_and_pin(store: CacheStore, make_file: MakeFile) -> None:
    entry = store.put(make_file(100))
    assert store.pin(entry.digest).pinned
    with pytest.raises(CacheError, match="pinned"):
        store.evict(entry.digest)
    store.pin(entry.digest, False)
    with store.using(entry.digest), pytest.raises(CacheError, match="in use"):
        store.evict(entry.digest)
    assert store.evict(entry.digest).digest == entry.digest
    assert not store.object_path(entry.digest).exists() and not store.entry(entry.digest).cached
    with pytest.raises(NotInCache):
        store.evict(entry.digest)
    with pytest.raises(NotInCache):
        store.pin(entry.digest)  # only a file on disk can be pinned
    assert not store.pin(entry.digest, False).pinned


# -- reconciling -------------------------------------------------------------------------------------


def test_reconcile_drops_entries_whose_file_is_missing_or_the_wrong_size(
    store: CacheStore, make_file: MakeFile
) -> None:
    missing, truncated, intact = (store.put(make_file(200), sources=[f"http://o.example/{i}"]) for i in range(3))
    store.object_path(missing.digest).unlink()
    path = store.object_path(truncated.digest)
    path.chmod(0o644)
    with open(path, "r+b") as f:
        f.truncate(150)
    result = reconcile(store)
    assert sorted(result.dropped) == sorted([missing.digest, truncated.digest])
    assert (result.orphans, result.staging, result.dead) == (0, 0, 0)
    assert not store.entry(missing.digest).cached and not store.entry(truncated.digest).cached
    assert store.entry(missing.digest).sources == ("http://o.example/0",)
    assert store.entry(intact.digest).cached
    assert not path.exists()
    assert_consistent(store)
    assert reconcile(store).dropped == ()


def test_reconcile_removes_old_orphan_objects_and_keeps_fresh_ones(store: CacheStore, make_file: MakeFile) -> None:
    recorded = store.put(make_file(100))
    age(store.object_path(recorded.digest), 10 * ORPHAN_GRACE_SECONDS)  # an old entry is not an orphan
    old, fresh = "0a" * 32, "0b" * 32
    for digest in (old, fresh):
        store.object_path(digest).parent.mkdir(exist_ok=True)
        store.object_path(digest).write_bytes(b"left by a crash")
        store.object_path(digest).chmod(0o444)
    age(store.object_path(old), ORPHAN_GRACE_SECONDS + 5)
    result = reconcile(store)
    assert result.orphans == 1 and result.dropped == ()
    assert not store.object_path(old).exists()
    # Another process may be between the rename that made it and the commit that records it.
    assert store.object_path(fresh).exists()
    assert store.object_path(recorded.digest).exists() and store.entry(recorded.digest).cached


def test_reconcile_keeps_an_object_being_recorded_whose_content_is_old(
    open_store: OpenStore, tmp_path: Path, clock: FakeClock
) -> None:
    # A download's part file can have its last write long before its whole-file hash finishes (a 100 GB
    # file hashes for minutes). A reconcile (another process starting) that runs between the rename into
    # objects/ and the commit must not take it for an orphan.
    other = open_store()
    results = []

    def clock_that_reconciles() -> float:
        # adopt() reads the clock after the rename, just before it records the entry.
        results.append(reconcile(other))
        return clock()

    store = open_store(clock_=clock_that_reconciles)
    part = store.staging_path("download.part")
    part.write_bytes(os.urandom(300))
    age(part, 10 * ORPHAN_GRACE_SECONDS)
    entry = store.adopt(part, name="big.iso")
    assert results[0].orphans == 0
    assert store.object_path(entry.digest).exists() and store.entry(entry.digest).cached
    assert_consistent(store)


def test_reconcile_removes_stale_staging_files(store: CacheStore) -> None:
    stale_put, fresh_put = store.staging_path("put-0011223344556677"), store.staging_path("put-8899aabbccddeeff")
    resumable, abandoned = store.staging_path("t1.part"), store.staging_path("t2.part")
    for path in (stale_put, fresh_put, resumable, abandoned):
        path.write_bytes(b"partial")
    age(stale_put, ORPHAN_GRACE_SECONDS + 5)
    age(resumable, 86400)  # a download's part file is kept for a later resume
    age(abandoned, STAGING_MAX_AGE + 60)
    assert reconcile(store).staging == 2
    assert staged(store) == sorted([fresh_put.name, resumable.name])


def test_reconcile_clears_the_uses_and_reservations_of_dead_processes(store: CacheStore, make_file: MakeFile) -> None:
    held_by_dead, held_by_us = store.put(make_file(100)), store.put(make_file(100))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with store.index.transaction() as db:
        db.execute("INSERT INTO uses (digest, pid, since) VALUES (?, ?, 0)", (held_by_dead.digest, dead.pid))
        db.execute("INSERT INTO reservations (size, pid, since) VALUES (300, ?, 0)", (dead.pid,))
    live_use = store.index.add_use(held_by_us.digest)
    with store.index.transaction() as db:
        store.index.add_reservation(db, 200)
    assert store.entry(held_by_dead.digest).in_use and store.usage().reserved == 500
    # Until then, the crashed process's reservation and use hold space and pin the entry.
    with pytest.raises(CacheFull):
        store.put(make_file(700))
    result = reconcile(store)
    assert result.dead == 2
    assert not store.entry(held_by_dead.digest).in_use and store.entry(held_by_us.digest).in_use
    assert store.usage().reserved == 200
    store.index.end_use(live_use)
    assert reconcile(store).dead == 0


# -- adopting ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["bare", "blake3", "sha256"])
def test_adopt_with_a_wrong_expected_digest_records_nothing(store: CacheStore, kind: str) -> None:
    data = os.urandom(200)
    wrong_blake3, wrong_sha256 = blake3.blake3(data + b"!").hexdigest(), hashlib.sha256(data + b"!").hexdigest()
    expected = {"bare": wrong_blake3, "blake3": f"blake3:{wrong_blake3}", "sha256": f"sha256:{wrong_sha256}"}[kind]
    part = store.staging_path("t.part")
    part.write_bytes(data)
    with store.reserve(200) as reservation:
        with pytest.raises(IntegrityError, match="does not match") as info:
            store.adopt(part, name="f", expected=expected, reservation=reservation, sources=[ORIGIN])
        assert info.value.expected == expected
        assert info.value.actual == f"blake3:{blake3.blake3(data).hexdigest()}"
    assert store.entries() == [] and object_files(store) == {}
    assert store.by_url(ORIGIN) is None
    assert store.usage().used == store.usage().reserved == 0
    assert part.read_bytes() == data  # the caller's staging file, left for it to remove


@pytest.mark.parametrize("kind", ["bare", "blake3", "sha256"])
def test_adopt_with_the_right_expected_digest_records_the_entry_and_its_task(store: CacheStore, kind: str) -> None:
    data = os.urandom(200)
    digest, sha256 = blake3.blake3(data).hexdigest(), hashlib.sha256(data).hexdigest()
    expected = {"bare": digest, "blake3": f"BLAKE3:{digest.upper()}", "sha256": f"sha256:{sha256}"}[kind]
    part = store.staging_path("t.part")
    part.write_bytes(data)
    task = SeededTask("t" * 40, "", ORIGIN, 2, 200, '"v1"', "")
    with store.reserve(200) as reservation:
        entry = store.adopt(part, name="f", expected=expected, reservation=reservation, sources=[ORIGIN], task=task)
        assert store.usage().reserved == 0  # the promise became the entry
    assert entry.digest == digest and entry.cached and not part.exists()
    assert store.index.tasks() == [SeededTask("t" * 40, digest, ORIGIN, 2, 200, '"v1"', "")]
    store.evict(digest)
    assert store.index.tasks() == []  # a task is seeded only while its file is on disk


def test_adopt_takes_the_hashes_its_caller_computed_while_writing(
    store: CacheStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A download hashed the file as it wrote it (peer.prefix_hash): adopting it reads it no more."""
    data = os.urandom(300)
    digest, sha256 = blake3.blake3(data).hexdigest(), hashlib.sha256(data).hexdigest()
    read: list[Path] = []
    real = cache_store.hash_content
    monkeypatch.setattr(cache_store, "hash_content", lambda path, **kw: read.append(path) or real(path, **kw))
    part = store.staging_path("t.part")
    part.write_bytes(data)
    entry = store.adopt(part, name="f", sources=[ORIGIN], sha256_later=True, hashes={"blake3": digest})
    assert (entry.digest, entry.sha256, read) == (digest, "", [])
    assert store.index.sha256_pending() == [digest]
    # A SHA-256 the caller must match, and did not compute, is read from the file here.
    part = store.staging_path("u.part")
    part.write_bytes(data[::-1])
    reversed_digest = blake3.blake3(data[::-1]).hexdigest()
    reversed_sha256 = hashlib.sha256(data[::-1]).hexdigest()
    entry = store.adopt(part, name="g", expected=f"sha256:{reversed_sha256}", hashes={"blake3": reversed_digest})
    assert (entry.digest, entry.sha256, len(read)) == (reversed_digest, reversed_sha256, 1)
    # Both given: the expected SHA-256 is checked against the caller's.
    part = store.staging_path("v.part")
    part.write_bytes(data + b"x")
    with pytest.raises(IntegrityError):
        store.adopt(part, name="h", expected=f"sha256:{sha256}", hashes={"blake3": digest, "sha256": "0" * 64})
    assert len(read) == 1


def adopt_later(store: CacheStore, data: bytes, expected: str | None = None) -> CacheEntry:
    """Adopt ``data`` as a download does in the daemon: its SHA-256 left pending."""
    part = store.staging_path(f"{len(store.entries())}.part")
    part.write_bytes(data)
    with store.reserve(len(data)) as reservation:
        return store.adopt(
            part, name="f", sources=[ORIGIN], reservation=reservation, expected=expected, sha256_later=True
        )


def test_a_copy_adopted_while_the_damaged_one_was_hashed_is_kept(store: CacheStore) -> None:
    """The background SHA-256 pass finds the file damaged, but a fresh copy of the same content was adopted
    under its id meanwhile (the daemon noticed the damage first and fetched again): that copy stays."""
    data = os.urandom(300)
    entry = adopt_later(store, data)
    path = store.object_path(entry.digest)

    def damaged_then_replaced(hashed: Path) -> tuple[str, str]:
        flipped = bytes([data[0] ^ 1]) + data[1:]
        result = blake3.blake3(flipped).hexdigest(), hashlib.sha256(flipped).hexdigest()
        fresh = store.staging_path("fresh.part")
        fresh.write_bytes(data)
        os.replace(fresh, hashed)  # what adopt does with the new download
        return result

    assert store.complete_sha256(hasher=damaged_then_replaced) == 0
    assert store.entry(entry.digest).cached and path.read_bytes() == data
    # The damaged file itself, still in place, is dropped.
    assert store.complete_sha256(hasher=lambda hashed: ("0" * 64, "0" * 64)) == 0
    assert not store.entry(entry.digest).cached and not path.exists()


def test_a_fresh_copy_made_after_the_damaged_one_was_removed_is_kept(store: CacheStore) -> None:
    """The daemon found the file damaged, removed it and fetched it again, all while the background pass
    hashed the damaged one: the fresh file is made after the damaged one's removal, when a filesystem may
    give it the damaged one's inode number (ext4 does), so that number alone cannot tell them apart."""
    data = os.urandom(300)
    entry = adopt_later(store, data)
    path = store.object_path(entry.digest)

    def damaged_then_removed_then_fetched(hashed: Path) -> tuple[str, str]:
        flipped = bytes([data[0] ^ 1]) + data[1:]
        hashed.unlink()  # the use that found the damage dropped it
        fresh = store.staging_path("fresh.part")
        fresh.write_bytes(data)  # the download made afterwards
        os.replace(fresh, hashed)  # and adopted
        return blake3.blake3(flipped).hexdigest(), hashlib.sha256(flipped).hexdigest()

    assert store.complete_sha256(hasher=damaged_then_removed_then_fetched) == 0
    assert store.entry(entry.digest).cached and path.read_bytes() == data


def test_a_fresh_copy_made_while_a_use_hashed_the_damaged_one_is_kept(
    store: CacheStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A use's check hashes a damaged file while the background pass drops it and a download puts a fresh
    copy in its place (the fault: a concurrent drop and adopt at that instant, not caused for real). The
    fresh copy, which a filesystem may give the damaged one's inode number, stays."""
    data = os.urandom(300)
    entry = adopt_later(store, data)
    path = store.object_path(entry.digest)
    path.chmod(0o644)
    path.write_bytes(bytes([data[0] ^ 1]) + data[1:])  # the stat changes: the next use hashes it
    real_hash = cache_store.hash_content

    def hashed_then_replaced(hashed: Path, *, sha256: bool = True) -> tuple[str, str]:
        result = real_hash(hashed, sha256=sha256)
        hashed.unlink()  # the background pass dropped it
        fresh = store.staging_path("fresh.part")
        fresh.write_bytes(data)  # the download made afterwards
        os.replace(fresh, hashed)  # and adopted
        return result

    monkeypatch.setattr(cache_store, "hash_content", hashed_then_replaced)
    assert store.verify(store.entry(entry.digest)) is False  # the damaged file it hashed
    assert store.entry(entry.digest).cached and path.read_bytes() == data


def test_a_copy_adopted_while_a_damaged_one_is_being_dropped_is_kept(
    store: CacheStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The drop of a damaged copy has checked that the file is still the one it hashed; a fresh copy's adopt
    that comes now must wait until the old file is gone, not be unlinked in its place."""
    data = os.urandom(300)
    entry = adopt_later(store, data)
    path = store.object_path(entry.digest)
    inode = path.stat().st_ino
    fresh = store.staging_path("fresh.part")
    fresh.write_bytes(data)
    failures: list[BaseException] = []

    def adopt() -> None:
        try:
            store.adopt(fresh, name="f", sha256_later=True)
        except BaseException as exc:
            failures.append(exc)

    adopting = threading.Thread(target=adopt)
    real_mark = store.index.mark_evicted

    def mark_while_adopting(db: Any, digest: str) -> None:
        adopting.start()
        adopting.join(0.3)  # without the store's lock the adopt would rename and insert right now
        real_mark(db, digest)

    monkeypatch.setattr(store.index, "mark_evicted", mark_while_adopting)
    store.drop(entry.digest, inode=inode)
    adopting.join()
    assert failures == []
    assert store.entry(entry.digest).cached and path.read_bytes() == data and path.stat().st_ino != inode


def test_a_sha256_left_for_later_is_pending_until_completed(store: CacheStore, clock: FakeClock) -> None:
    data = os.urandom(300)
    entry = adopt_later(store, data)
    assert entry.cached and entry.digest == blake3.blake3(data).hexdigest()
    assert entry.sha256 == "" and entry.to_json()["sha256"] is None
    assert store.index.sha256_pending() == [entry.digest]
    clock.advance(60)
    assert store.complete_sha256() == 1
    completed = store.entry(entry.digest)
    assert completed.sha256 == hashlib.sha256(data).hexdigest()
    assert completed.last_access == entry.last_access  # looking after it is not a use (eviction order kept)
    assert store.index.sha256_pending() == [] and store.complete_sha256() == 0


def test_a_sha256_lookup_completes_the_pending_ones_first(store: CacheStore) -> None:
    data = os.urandom(300)
    entry = adopt_later(store, data)
    found = store.lookup(f"sha256:{hashlib.sha256(data).hexdigest()}")
    assert found is not None and found.digest == entry.digest
    assert store.index.sha256_pending() == []


def test_info_and_export_name_a_pending_entry_by_both_ids(store: CacheStore) -> None:
    first, second = os.urandom(300), os.urandom(200)
    one, two = adopt_later(store, first), adopt_later(store, second)
    assert store.info(one.digest).sha256 == hashlib.sha256(first).hexdigest()
    assert store.index.sha256_pending() == [two.digest]  # info completes only the entry it shows
    files = {f.digest: f.sha256 for f in parse_export(json.loads(json.dumps(cache_sync.export(store, node=NODE))))}
    assert files == {one.digest: hashlib.sha256(first).hexdigest(), two.digest: hashlib.sha256(second).hexdigest()}


def test_an_expected_sha256_is_checked_at_once_even_when_asked_for_later(store: CacheStore) -> None:
    data = os.urandom(300)
    sha256 = hashlib.sha256(data).hexdigest()
    assert adopt_later(store, data, expected=f"sha256:{sha256}").sha256 == sha256
    with pytest.raises(IntegrityError):
        adopt_later(store, os.urandom(300), expected=f"sha256:{sha256}")


def test_a_pending_entry_damaged_on_disk_is_removed_not_completed(store: CacheStore) -> None:
    entry = adopt_later(store, os.urandom(300))
    flip_a_byte(store.object_path(entry.digest))
    assert store.complete_sha256() == 0
    assert not store.entry(entry.digest).cached and object_files(store) == {}


def test_an_entry_evicted_while_pending_is_left_out_of_the_export(store: CacheStore) -> None:
    entry = adopt_later(store, os.urandom(300))
    store.evict(entry.digest)
    assert store.complete_sha256() == 0
    assert parse_export(json.loads(json.dumps(cache_sync.export(store, node=NODE)))) == []


class BlockedHasher:
    """A background hasher that opens the file (as the idle child does), then waits for ``release`` before
    reading it: the pass is held mid-file for as long as the test needs, with no timing involved."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, path: Path) -> tuple[str, str]:
        with open(path, "rb") as f:
            self.started.set()
            assert self.release.wait(30)
            data = f.read()
        return blake3.blake3(data).hexdigest(), hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("how", ["command", "lru", "replaced"])
def test_the_background_sha256_never_keeps_a_file_from_eviction(
    store: CacheStore, open_store: OpenStore, make_file: MakeFile, clock: FakeClock, how: str
) -> None:
    """The daemon's SHA-256 pass runs at idle priority and may take a minute on a busy host: an eviction
    (``shoal cache evict`` in another process, or the LRU making room) goes ahead while it hashes, and the
    hash of the file it read is not recorded once that file is no longer the entry's."""
    data = os.urandom(300)
    entry = adopt_later(store, data)
    hasher = BlockedHasher()
    completed: list[int] = []
    worker = threading.Thread(target=lambda: completed.append(store.complete_sha256(hasher=hasher)))
    worker.start()
    try:
        assert hasher.started.wait(30)
        if how == "command":
            other = open_store(None)  # another connection to the index, as another process has
            assert other.evict(entry.digest).digest == entry.digest
        else:
            clock.advance()
            store.put(make_file(800))  # past the high watermark: the least recently used entry must go
            if how == "replaced":
                assert not store.entry(entry.digest).cached
                adopt_later(store, data)  # the same content fetched again: a new file under the same id
    finally:
        hasher.release.set()
        worker.join(30)
    assert completed == [0]
    after = store.entry(entry.digest)
    assert after.sha256 == ""  # pending still: nothing was recorded from the file the pass read
    assert after.cached == (how == "replaced")
    assert_consistent(store)


# -- two processes, one cache --------------------------------------------------------------------------


def test_two_stores_on_one_index_see_each_others_entries(
    open_store: OpenStore, make_file: MakeFile, clock: FakeClock
) -> None:
    first, second = open_store(), open_store(None)
    entry = first.put(make_file(300))
    assert second.lookup(entry.digest) == entry
    with second.using(entry.digest) as (_, path):
        assert path.exists() and first.entry(entry.digest).in_use
    second.pin(entry.digest)
    assert first.entry(entry.digest).pinned
    with first.reserve(400):
        assert second.usage().reserved == 400 and second.usage().capacity == CAP
        # The other's promise counts: 300 pinned + 400 reserved leave no room for 400 more.
        with pytest.raises(CacheFull):
            second.put(make_file(400))
    clock.advance()
    other = second.put(make_file(400))
    assert {e.digest for e in first.entries()} == {entry.digest, other.digest}
    assert_consistent(first)


def test_another_process_sees_the_entries_and_the_space(store: CacheStore, make_file: MakeFile, tmp_path: Path) -> None:
    mine = store.put(make_file(300))
    theirs = make_file(200)
    script = textwrap.dedent(
        """
        import json, sys
        from pathlib import Path
        from shoal.storage.cache_store import CacheStore
        index, storage, mine, theirs = sys.argv[1:]
        with CacheStore(Path(index), Path(storage)) as store:
            assert store.cached(mine).size == 300
            entry = store.put(Path(theirs))
            print(json.dumps({"digest": entry.digest, "capacity": store.capacity}))
        """
    )
    args = [str(store.index.path), str(store.storage), mine.digest, str(theirs)]
    result = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, check=True)
    reply = json.loads(result.stdout)
    assert reply["capacity"] == CAP
    assert store.cached(reply["digest"]).size == 200
    assert store.usage().used == 500
    assert_consistent(store)


# -- syncing nodes -------------------------------------------------------------------------------------


def test_import_records_entries_as_known_and_keeps_those_already_cached(
    store: CacheStore, make_file: MakeFile, clock: FakeClock
) -> None:
    mine = store.put(make_file(300), name="mine.iso", sources=[ORIGIN], pin=True)
    elsewhere = ExportedFile(
        "cd" * 32, "theirs.iso", 1 << 40, "ef" * 32, 1_700_000_000.0, ("http://o.example/theirs.iso",), (NODE,)
    )
    same_as_mine = ExportedFile(
        mine.digest, "renamed.iso", 5, mine.sha256, 1.0, ("http://mirror.example/mine.iso",), (NODE,)
    )
    clock.advance()
    assert cache_sync.import_files(store, [elsewhere, same_as_mine]) == 1
    known = store.entry("cd" * 32)
    assert (known.cached, known.pinned, known.in_use, known.verified_stat) == (False, False, False, "")
    assert (known.name, known.size, known.sha256, known.added) == ("theirs.iso", 1 << 40, "ef" * 32, 1_700_000_000.0)
    assert known.sources == ("http://o.example/theirs.iso",) and known.holders == (NODE,)
    assert store.lookup(f"sha256:{'ef' * 32}") == known
    with pytest.raises(NotInCache, match="known but not on this node's disk"):
        store.cached("cd" * 32)
    with pytest.raises(NotInCache), store.using("cd" * 32):
        pass
    kept = store.entry(mine.digest)
    assert (kept.cached, kept.pinned, kept.name, kept.size, kept.added) == (True, True, "mine.iso", 300, mine.added)
    assert kept.verified_stat == mine.verified_stat
    # What it learnt about its own file is added: another source, another holder.
    assert kept.sources == ("http://mirror.example/mine.iso", ORIGIN) and kept.holders == (NODE,)
    # A known entry takes no space.
    assert store.usage().used == 300 and store.usage().files == 1
    assert_consistent(store)
    # Importing again adds nothing.
    assert cache_sync.import_files(store, [elsewhere, same_as_mine]) == 0


def test_fetching_a_known_entry_makes_it_cached(store: CacheStore, make_file: MakeFile) -> None:
    data = os.urandom(100)
    digest = blake3.blake3(data).hexdigest()
    known = ExportedFile(digest, "f", 100, hashlib.sha256(data).hexdigest(), 5.0, (ORIGIN,), (NODE,))
    cache_sync.import_files(store, [known])
    entry = store.put(make_file(data=data))
    assert entry.cached and entry.holders == (NODE,) and entry.sources == (ORIGIN,)
    assert_consistent(store)


def test_export_lists_sources_and_the_node_as_a_peer_of_cached_files(
    store: CacheStore, make_file: MakeFile, clock: FakeClock
) -> None:
    cached = store.put(make_file(300), name="cached.iso", sources=[ORIGIN])
    gone = store.put(make_file(100), name="gone.iso", sources=["http://o.example/gone"])
    store.evict(gone.digest)
    cache_sync.import_files(
        store, [ExportedFile("cd" * 32, "theirs.iso", 7, "ef" * 32, 5.0, (), ("http://10.0.0.9:7000/",))]
    )
    clock.advance(0.5)
    doc = cache_sync.export(store, node=NODE)
    assert (doc["version"], doc["exported"], doc["node"]) == (1, int(clock.now), NODE)
    by_id = {f["id"]: f for f in doc["files"]}
    assert by_id[cached.digest] == {
        "id": cached.digest,
        "name": "cached.iso",
        "size": 300,
        "sha256": cached.sha256,
        "added": int(cached.added),
        "sources": [ORIGIN],
        "peers": [NODE],
    }
    assert by_id[gone.digest]["peers"] == [] and by_id[gone.digest]["sources"] == ["http://o.example/gone"]
    assert by_id["cd" * 32]["peers"] == ["http://10.0.0.9:7000/"]
    # Without a node, only the holders it learnt of.
    assert {f["id"]: f["peers"] for f in cache_sync.export(store)["files"]}[cached.digest] == []
    # A document another node can read.
    assert len(parse_export(json.loads(json.dumps(doc)))) == 3


def test_export_since(store: CacheStore, make_file: MakeFile, clock: FakeClock) -> None:
    store.put(make_file(10))
    since = clock.advance(100)
    newer = store.put(make_file(10))
    assert [f["id"] for f in cache_sync.export(store, since=since)["files"]] == [newer.digest]


def test_an_export_moves_what_one_node_holds_to_another(
    open_store: OpenStore, make_file: MakeFile, tmp_path: Path
) -> None:
    first = open_store(storage=tmp_path / "first", index=tmp_path / "first.db")
    second = open_store(storage=tmp_path / "second", index=tmp_path / "second.db")
    entries = [first.put(make_file(100), sources=[f"http://o.example/{i}"]) for i in range(3)]
    files = parse_export(json.loads(json.dumps(cache_sync.export(first, node=NODE))))
    assert cache_sync.import_files(second, files) == 3
    for entry in entries:
        known = second.entry(entry.digest)
        assert not known.cached and known.holders == (NODE,) and known.sources == entry.sources
        assert (known.name, known.size, known.sha256) == (entry.name, entry.size, entry.sha256)
    assert second.usage().used == 0 and object_files(second) == {}
    # Exported again by the second node, it names the first as the holder, not itself.
    again = {f["id"]: f["peers"] for f in cache_sync.export(second, node="http://10.0.0.6:7000/")["files"]}
    assert again == {e.digest: [NODE] for e in entries}


def test_an_accepted_document_at_the_limits_imports_and_exports(store: CacheStore) -> None:
    doc = {
        "version": 1,
        "files": [
            {"id": "cd" * 32, "name": "n" * 255, "size": (1 << 63) - 1, "sha256": "ef" * 32, "added": 1e18},
        ],
    }
    assert cache_sync.import_files(store, parse_export(doc)) == 1
    assert store.entry("cd" * 32).size == (1 << 63) - 1
    assert parse_export(json.loads(json.dumps(cache_sync.export(store)))) == parse_export(doc)


def test_a_cloud_manager_dump_records_files_known_by_sha256_until_the_file_arrives(
    store: CacheStore, make_file: MakeFile
) -> None:
    """cloud-manager's files have no BLAKE3: they are known by ``sha256:`` (not entries, no space), named
    when looked up, and become an entry when a file with that SHA-256 is put; one the cache has is skipped."""
    data = os.urandom(100)
    sha = hashlib.sha256(data).hexdigest()
    mine = store.put(make_file(50))
    dump = [
        {"version": "0.2", "filename": "a.bin", "filesize": "100", "filehash": sha, "datetime": "5", "uploads": []},
        {"version": "0.2", "filename": "m.bin", "filesize": 50, "filehash": mine.sha256, "datetime": 6},
    ]
    assert cache_sync.import_document(store, dump) == (2, 1)
    assert cache_sync.import_document(store, dump) == (2, 0)
    assert store.lookup(f"sha256:{sha}") is None
    known = store.known_only(f"sha256:{sha[:12]}")
    assert known is not None and (known.name, known.size, known.added) == ("a.bin", 100, 5.0)
    assert store.known_only(f"sha256:{mine.sha256}") is None and store.known_only(sha) is None
    with pytest.raises(NotInCache, match=r"\(a.bin\) is known by its SHA-256 only, from an import of cloud-manager"):
        store.entry(f"sha256:{sha}")
    assert store.usage().files == 1
    entry = store.put(make_file(data=data))
    assert store.lookup(f"sha256:{sha}") == store.entry(entry.digest)
    assert store.known_only(f"sha256:{sha}") is None
    assert store.index.known_sha256("", limit=10) == []


def test_a_bad_cloud_manager_dump_records_nothing(store: CacheStore) -> None:
    good = {"version": "0.2", "filename": "a", "filesize": 1, "filehash": "ab" * 32, "datetime": 1}
    with pytest.raises(UsageError, match=r"^cannot import: \[1\]\.filesize: must be a non-negative integer"):
        cache_sync.import_document(store, [good, {**good, "filehash": "cd" * 32, "filesize": "lots"}])
    assert store.index.known_sha256("", limit=10) == []


def test_an_index_made_before_known_sha256_gains_the_table_on_open(
    tmp_path: Path, open_store: OpenStore, make_file: MakeFile
) -> None:
    """Schema changes are additive: an index without the table (as an older Shoal made it) is opened, kept,
    and takes a dump."""
    import sqlite3

    index = tmp_path / "old.db"
    with CacheStore(index, tmp_path / "old", CAP) as old:
        old.put(make_file(10))
    db = sqlite3.connect(index, isolation_level=None)
    db.execute("DROP TABLE known_sha256")
    assert db.execute("SELECT 1 FROM sqlite_master WHERE name = 'known_sha256'").fetchone() is None
    db.close()
    store = open_store(index=index, storage=tmp_path / "old")
    assert store.usage().files == 1
    dump = [{"version": "0.1", "filesize": 1, "filehash": "ab" * 32, "datetime": 1}]
    assert cache_sync.import_document(store, dump) == (1, 1)
    assert store.known_only("sha256:" + "ab" * 32) == KnownFile("ab" * 32, "ab" * 5, 1, 1.0)
