"""The placement rule's decisions on real files: what is written through, where temporary files live, and
the scratch directory's privacy (another user must not be able to aim our predictable names)."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest

from shoal.core.errors import LocalIOError
from shoal.storage.placement import Destination, scratch_dir


@pytest.fixture(autouse=True)
def private_tmpdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


def test_a_regular_destination_keeps_its_temporary_files_beside_its_target(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    link = tmp_path / "link.bin"
    link.symlink_to(tmp_path / "real" / "f.bin")  # dangling: followed all the same
    dest = Destination.of(link)
    assert dest.path == link and dest.target == tmp_path / "real" / "f.bin" and not dest.through
    assert dest.temporary("shoal-part") == tmp_path / "real" / ".f.bin.shoal-part"


def test_a_device_or_a_fifo_is_written_through_with_its_temporary_files_in_the_scratch_directory(
    tmp_path: Path, private_tmpdir: Path
) -> None:
    fifo, null = tmp_path / "fifo", tmp_path / "null"
    os.mkfifo(fifo)
    os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    for path in (fifo, null):
        dest = Destination.of(path)
        assert dest.through and dest.temporary("shoal-part").parent == private_tmpdir / f"shoal-{os.getuid()}"
    assert Destination.of(fifo).temporary("shoal-part") != Destination.of(null).temporary("shoal-part")
    Destination.of(null).prepare()
    assert stat.S_IMODE(os.lstat(scratch_dir()).st_mode) == 0o700


@pytest.mark.parametrize("kind", ["shared", "symlink"])
def test_a_scratch_directory_others_could_write_or_aim_is_refused(
    tmp_path: Path, private_tmpdir: Path, kind: str
) -> None:
    scratch = private_tmpdir / f"shoal-{os.getuid()}"
    if kind == "shared":
        scratch.mkdir()
        scratch.chmod(0o777)
    else:
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        scratch.symlink_to(tmp_path / "elsewhere")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(LocalIOError, match="not a private directory"):
        Destination.of(fifo).prepare()
    assert list((tmp_path / "elsewhere").iterdir() if kind == "symlink" else scratch.iterdir()) == []
