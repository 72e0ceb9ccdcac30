"""``shoal get --dest-path``: a directory to write into, or, when it is none, the file itself (minion's
file-or-directory rule), as a migrating user's scripts use it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.integration.conftest import Daemon, Origin, run_get

SIZE = 300_000


def test_dest_path_is_a_directory_or_the_file_itself(
    tmp_path: Path, origin: Callable[..., Origin], make_file: Callable[[Path, int], bytes]
) -> None:
    o = origin()
    data = make_file(o.root / "release.bin", SIZE)
    into = tmp_path / "into"
    into.mkdir()

    def get(dest: str) -> None:
        done = run_get(o.url("release.bin"), "--dest-path", dest, "--no-daemon", timeout=60)
        assert done.returncode == 0, done.stderr

    get(str(into))  # an existing directory: named after the URL inside it
    assert (into / "release.bin").read_bytes() == data
    get(str(tmp_path / "renamed.bin"))  # not a directory, its parent is: the file itself
    assert (tmp_path / "renamed.bin").read_bytes() == data
    get(str(tmp_path / "renamed.bin"))  # an existing file: replaced, as -o would
    assert (tmp_path / "renamed.bin").read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "origin") == ["into", "renamed.bin"]


def test_a_dest_path_whose_parent_is_missing_is_refused_and_writes_nothing(
    tmp_path: Path, origin: Callable[..., Origin], make_file: Callable[[Path, int], bytes]
) -> None:
    o = origin()
    make_file(o.root / "release.bin", SIZE)
    for dest in (tmp_path / "no" / "such.bin", f"{tmp_path / 'newdir'}/"):
        done = run_get(o.url("release.bin"), "--dest-path", str(dest), "--no-daemon", timeout=60)
        assert done.returncode == 6, done.stderr  # the destination directory is missing
        assert "does not exist" in done.stderr, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["origin"]


def test_dest_path_as_the_file_itself_through_a_daemon(
    tmp_path: Path,
    origin: Callable[..., Origin],
    make_file: Callable[[Path, int], bytes],
    daemon: Callable[..., Daemon],
) -> None:
    """The same rule when the host's daemon does the download and places the file."""
    o = origin()
    data = make_file(o.root / "release.bin", SIZE)
    node = daemon()
    into = tmp_path / "into"
    into.mkdir()
    for dest, placed in ((into, into / "release.bin"), (tmp_path / "renamed.bin", tmp_path / "renamed.bin")):
        done = run_get(o.url("release.bin"), "--dest-path", str(dest), "--socket", str(node.socket), timeout=60)
        assert done.returncode == 0, done.stderr
        assert "cached by the daemon" in done.stderr or "cache hit" in done.stderr, done.stderr
        assert placed.read_bytes() == data
    assert sorted(p.name for p in into.iterdir()) == ["release.bin"]
