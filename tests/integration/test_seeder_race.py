"""A symlink swapped while the seeder publishes it (issue 28: a check-then-use race once served a file from
outside the watched directory). The seeder runs in this process on real files; its ``opened`` hook swaps
the link between the file's open and the check that it lies inside, which makes the race happen every
time instead of now and then."""

from __future__ import annotations

import os
from pathlib import Path

import blake3
import pytest

from shoal.seeder.config import SeederConfig
from shoal.seeder.service import Seeder
from shoal.storage.hash_index import HashIndex
from shoal.testing.poll import wait_until_async


def swap_link(link: Path, target: Path) -> None:
    """Point ``link`` at ``target`` in one step (rename over it), as an attacker would."""
    staged = link.with_name(f".{link.name}.new")  # hidden: the seeder ignores it
    staged.symlink_to(target)
    os.replace(staged, link)


@pytest.mark.parametrize("first", ["outside", "inside"])
async def test_a_symlink_swapped_between_open_and_check_never_publishes_a_file_from_outside(
    tmp_path: Path, first: str
) -> None:
    watched = tmp_path / "releases"
    watched.mkdir()
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"do not serve" * 1000)
    inside = watched / "inside.bin"
    inside.write_bytes(b"public" * 1000)
    link = watched / "link.bin"
    targets = {"outside": secret, "inside": inside}
    link.symlink_to(targets[first])
    swaps: list[Path] = []

    def swap(path: Path) -> None:
        if path == link and not swaps:
            then = targets["inside" if first == "outside" else "outside"]
            swap_link(link, then)
            swaps.append(then)

    config = SeederConfig(dirs=(watched,), state_dir=tmp_path / "state", settle=0.05, quiet=0.1)
    with HashIndex(tmp_path / "hashes.db") as index:
        seeder = Seeder(config, index)
        seeder.opened = swap
        await seeder.start()
        try:
            await wait_until_async(lambda: seeder.catalog.get("releases/inside.bin"), "inside.bin published")

            def settled() -> bool:
                rel = "releases/link.bin"
                return bool(swaps) and not seeder.catalog.is_pending(rel) and not seeder._waits

            await wait_until_async(settled, "the seeder done with link.bin")
            entry = seeder.catalog.get("releases/link.bin")
        finally:
            await seeder.stop()
    secret_digest = blake3.blake3(secret.read_bytes()).hexdigest()
    assert entry is None or entry.hashes.digest != secret_digest
    if first == "outside":
        # Opened while it led out, checked while it led in: refused then; published once it is looked at
        # again (the swap is an event of its own), with the bytes inside.
        assert entry is None or entry.hashes.digest == blake3.blake3(inside.read_bytes()).hexdigest()
    else:
        assert entry is None
