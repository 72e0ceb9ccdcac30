"""``shoal.Cache`` used as cloud-manager is (no ``with``: opened on first use, closed by ``close()``, opened
again on the next use), its data_dump/data_load between nodes, and ``shoal cache import`` of cloud-manager's
dump in a real process."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

import shoal
from shoal.core.errors import NotInCache, UsageError
from tests.integration.conftest import Origin, cache_cli

MiB = 1 << 20


def cloud_manager_dump(*files: tuple[str, bytes]) -> list[dict[str, object]]:
    """A dump as cloud-manager's data_dump writes it (payload.to_dict: numbers as strings)."""
    return [
        {
            "version": "0.2",
            "datetime": "1391212800",
            "filename": name,
            "filesize": str(len(data)),
            "filehash": hashlib.sha256(data).hexdigest(),
            "uploads": [{"host_name": "mediafire", "url": "http://www.mediafire.com/?qorncpzfe74s9"}],
        }
        for name, data in files
    ]


def hashes(dump: list[dict[str, object]]) -> list[str]:
    return [str(item["filehash"]) for item in dump]


def test_the_cloud_manager_call_pattern_ports_line_by_line(
    origin: Callable[..., Origin], tmp_path: Path, make_file: Callable[[Path, int], bytes]
) -> None:
    o = origin()
    data = make_file(o.root / "file.bin", MiB)
    local = tmp_path / "local.bin"
    local.write_bytes(b"x" * 1000)
    cm = shoal.Cache(tmp_path / "index.sqlite", tmp_path / "store", 10 * MiB)
    key = cm.upload(local)
    assert cm.exists(key) and cm.on_cache(key)
    assert cm.used_space() == 1000 and cm.capacity() == 10 * MiB
    assert cm.usage_ratio() == pytest.approx(1000 / (10 * MiB))
    cm.close()
    cm.close()  # idempotent
    # Used again after close: it opens again, and sees what it held.
    assert cm.on_cache(key) and cm.download(key).read_bytes() == b"x" * 1000
    warmed = cm.warm_up(o.url("file.bin"))
    cm.close()
    assert cm.download(warmed).read_bytes() == data
    assert cm.used_space() == 1000 + MiB
    cm.close()
    with cm:  # and still as a context manager
        assert cm.exists(f"sha256:{hashlib.sha256(data).hexdigest()}")


def test_a_cache_opened_lazily_from_several_threads_opens_once(tmp_path: Path) -> None:
    cm = shoal.Cache(tmp_path / "index.sqlite", tmp_path / "store", "10M")
    files = []
    for i in range(4):
        files.append(tmp_path / f"f{i}")
        files[-1].write_bytes(bytes([i]) * 100)
    ids: list[str] = []
    threads = [threading.Thread(target=lambda p=p: ids.append(cm.put(p))) for p in files]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 4 and cm.used_space() == 400
    cm.close()


def test_data_dump_and_data_load_move_a_catalogue_between_nodes(tmp_path: Path) -> None:
    a = shoal.Cache(tmp_path / "a.sqlite", tmp_path / "a", "10M")
    b = shoal.Cache(tmp_path / "b.sqlite", tmp_path / "b", "10M")
    assert a.data_dump() is None  # nothing to dump, as cloud-manager says it
    ids = []
    for i in range(3):
        path = tmp_path / f"f{i}"
        path.write_bytes(bytes([i]) * (100 + i))
        ids.append(a.upload(path))
    whole = a.data_dump()
    assert whole is not None and len(json.loads(whole)["files"]) == 3
    # A limit in bytes keeps whole files only, oldest first.
    one = len(json.dumps({**json.loads(whole), "files": json.loads(whole)["files"][:1]}, separators=(",", ":")))
    limited = a.data_dump(limit=one + 10)
    assert limited is not None and len(limited) <= one + 10
    assert [f["id"] for f in json.loads(limited)["files"]] == ids[:1]
    assert a.data_dump(limit=50) is None
    assert b.data_load(limited) == 1
    assert b.data_load(json.loads(whole)) == 2
    assert all(b.exists(i) and not b.on_cache(i) for i in ids)
    with pytest.raises(UsageError, match="not JSON"):
        b.data_load("{nope")
    a.close()
    b.close()


def test_data_load_reads_cloud_manager_dumps(tmp_path: Path) -> None:
    cm = shoal.Cache(tmp_path / "index.sqlite", tmp_path / "store", "10M")
    dump = cloud_manager_dump(("README.md", b"readme"), ("song.mp3", b"la" * 100))
    assert cm.data_load(json.dumps(dump)) == 2
    readme = f"sha256:{hashlib.sha256(b'readme').hexdigest()}"
    assert cm.exists(readme) and not cm.on_cache(readme)
    with pytest.raises(NotInCache, match="known by its SHA-256 only"):
        cm.download(readme)
    path = tmp_path / "README.md"
    path.write_bytes(b"readme")
    cm.upload(path)
    assert cm.on_cache(readme) and cm.download(readme).read_bytes() == b"readme"
    cm.close()


def test_cache_import_reads_a_cloud_manager_dump_all_or_nothing(tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    dump = cloud_manager_dump(("README.md", b"readme"), ("song.mp3", b"la" * 100))
    (tmp_path / "dump.json").write_text(json.dumps(dump))
    bad = [*dump, {**dump[0], "filehash": "0" * 64, "filesize": "big"}]
    refused = cache_cli(cache_dir, "import", "-", stdin=json.dumps(bad))
    assert refused.returncode == 2, refused.stderr
    assert "cannot import: [2].filesize: must be a non-negative integer; nothing was imported" in refused.stderr
    readme = f"sha256:{hashlib.sha256(b'readme').hexdigest()}"
    assert cache_cli(cache_dir, "exists", readme).stdout == "absent\n"
    imported = cache_cli(cache_dir, "import", str(tmp_path / "dump.json"))
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.startswith("imported 2 entries (2 new) at ")
    exists = cache_cli(cache_dir, "exists", readme)
    assert (exists.returncode, exists.stdout) == (1, "known (not on disk)\n")
    listed = cache_cli(cache_dir, "ls", "--all").stdout.splitlines()[1:]
    assert sorted(line.split()[0] for line in listed) == sorted(f"sha256:{h[:9]}" for h in hashes(dump))
    assert "README.md" in "".join(listed) and cache_cli(cache_dir, "ls").stdout.count("\n") == 1
    shown = [json.loads(line) for line in cache_cli(cache_dir, "ls", "--all", "--json").stdout.splitlines()]
    assert sorted(v["sha256"] for v in shown) == sorted(hashes(dump)) and not any(v["cached"] for v in shown)
    first = listed[0].split()[0]
    assert cache_cli(cache_dir, "exists", first).stdout == "known (not on disk)\n"  # the id shown names it
    warm = cache_cli(cache_dir, "warm", readme)
    assert warm.returncode == 7, warm.stderr
    assert "known by its SHA-256 only" in warm.stderr
    (tmp_path / "README.md").write_bytes(b"readme")
    assert cache_cli(cache_dir, "put", str(tmp_path / "README.md")).returncode == 0
    assert cache_cli(cache_dir, "exists", readme).stdout == "cached\n"
    again = cache_cli(cache_dir, "import", str(tmp_path / "dump.json"))
    assert again.stdout.startswith("imported 2 entries (0 new) at ")
