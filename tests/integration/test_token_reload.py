"""Rolling the fleet token (shoal.http.token_reload): a running process reads its token file again when it
changes, or on SIGHUP, in place; a file that cannot be used is refused and the tokens in force are kept."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import pytest

from shoal.core.tickets import FleetKey
from shoal.http.credentials import load
from shoal.http.token_reload import reloading
from shoal.testing.poll import wait_until_async

OLD = b"the old token of the fleet, 0123"
NEW = b"the new token of the fleet, 4567"  # as long as OLD: an edit in place keeps the file's size


def signing(token: bytes) -> bytes:
    return FleetKey.from_token(token).request_key


async def test_sighup_reloads_a_file_edited_in_place_and_a_bad_file_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "fleet.token"
    path.write_bytes(OLD)
    path.chmod(0o600)
    credentials = load(path)
    key = credentials.key
    assert key is not None
    async with reloading(credentials):
        # In place, with its old modification time: only SIGHUP tells the process.
        before = os.stat(path)
        with open(path, "r+b") as file:  # noqa: ASYNC230 (a few bytes to a local file; the test's own edit)
            file.write(NEW)
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        os.kill(os.getpid(), signal.SIGHUP)
        await wait_until_async(lambda: key.request_key == signing(NEW), "SIGHUP to reload the token file")

        # A file emptied (a half-written copy, say) changes its stat, and is refused; NEW stays in force.
        with caplog.at_level(logging.WARNING, logger="shoal.fleet"):
            path.write_bytes(b"")
            await wait_until_async(lambda: "not reloaded" in caplog.text, "the refusal of an empty token file")
        assert key.request_key == signing(NEW) and "no fleet token" in caplog.text
