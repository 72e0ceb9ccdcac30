"""Shell commands for mirror jobs (hooks and the command provider) and the rsync providers' programs: one
process group each, killed whole.

Every command runs as ``/bin/sh -c COMMAND`` (``run_shell``), or as its own argument list
(``run_process``: rsync, whose arguments are not to be re-parsed by a shell), in a new session
(``start_new_session``), so the shell and everything it starts (``rsync``, ``sleep 1000 &``) share one
process group that can be signalled at once.

Rules, and why:

- Stopping a command signals the whole group: SIGTERM first, so rsync and friends can remove their
  temporary files, then SIGKILL once the group has not gone within ``grace`` seconds. A shell that exits
  on SIGTERM while a child ignores it does not end the wait early: the group, not the shell, must go.
- A command's time is bounded (``limit``); past it, it is stopped as above and the result says so.
- Cancelling ``run_shell`` (the worker stops or restarts the job) stops the group the same way before the
  CancelledError goes on, so no sync outlives the attempt it belonged to.
- When the shell exits on its own, whatever it left running in its group (a forgotten ``&``) is killed:
  the attempt is over, and a stray process would keep the output pipe open and write into a version
  after it was published.
- Output (stdout and stderr, interleaved) is read as it comes and only its last ``OUTPUT_LIMIT`` bytes are
  kept, so a chatty rsync costs bounded memory; the tail is what explains a failure. Every chunk also goes
  to ``output`` when given (the job's run log, ``shoal.mirror.run_log``), as it arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

OUTPUT_LIMIT = 4096
"""Bytes of a command's output kept (its tail)."""
KILL_GRACE = 5.0
"""Seconds between SIGTERM and SIGKILL when a command is stopped."""
_DRAIN_AFTER_EXIT = 2.0
"""Seconds to wait for the rest of the output once the shell and its group are gone."""
_POLL = 0.05


@dataclass(frozen=True, slots=True)
class ShellResult:
    """How a command ended."""

    returncode: int | None
    """The shell's exit status; negative: killed by that signal; None only if it could not be reaped."""
    output: str
    """The tail of its output (at most OUTPUT_LIMIT bytes, decoded; starts with '...' when cut)."""
    timed_out: bool = False
    """It ran past its timeout and was stopped."""

    @property
    def status_text(self) -> str:
        """``exit status 3`` or ``killed by SIGKILL``, for messages."""
        if self.returncode is None:
            return "no exit status"
        if self.returncode < 0:
            try:
                name = signal.Signals(-self.returncode).name
            except ValueError:
                name = f"signal {-self.returncode}"
            return f"killed by {name}"
        return f"exit status {self.returncode}"


class _Tail:
    """The last ``limit`` bytes of a stream."""

    def __init__(self, limit: int, output: Callable[[bytes], None] | None = None) -> None:
        self.limit = limit
        self.data = bytearray()
        self.cut = False
        self.output = output

    async def drain(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(65536):
            if self.output is not None:
                self.output(chunk)
            self.data += chunk
            if len(self.data) > self.limit:
                del self.data[: len(self.data) - self.limit]
                self.cut = True

    def text(self) -> str:
        text = self.data.decode("utf-8", errors="replace")
        return "..." + text if self.cut else text


class _Protocol(asyncio.subprocess.SubprocessStreamProtocol):
    """asyncio's own subprocess protocol, plus an event for the shell's exit.

    ``Process.wait()`` returns only once the output pipe is closed as well, and a process the shell left
    in the background keeps it open: the exit itself is what ends a command here."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=2**16, loop=loop)
        self.exited = asyncio.Event()

    def process_exited(self) -> None:
        super().process_exited()
        self.exited.set()


def _signal_group(pgid: int, signum: int) -> bool:
    """Send ``signum`` to the group; False when the group is gone."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    except PermissionError:
        # A member changed its credentials (a setuid helper): the rest of the group still gets it.
        log.warning("not allowed to signal every process of group %d", pgid)
    return True


def _group_alive(pgid: int) -> bool:
    """Whether any process of the group still runs. Zombies do not count: an orphan of the group is
    reaped by init, which in a container may take seconds, and a zombie holds nothing."""
    if not _signal_group(pgid, 0):
        return False
    try:
        pids = [entry for entry in os.listdir("/proc") if entry.isdigit()]
    except OSError:  # no /proc: the signal's answer is all there is
        return True
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as stat:
                data = stat.read()
        except OSError:
            continue
        # proc(5): "pid (comm) state ppid pgrp ..."; comm may hold spaces and parentheses, so split after
        # its last ')'.
        fields = data[data.rfind(b")") + 2 :].split()
        if len(fields) > 2 and fields[2] == str(pgid).encode() and fields[0] != b"Z":
            return True
    return False


async def stop_group(process: asyncio.subprocess.Process, grace: float = KILL_GRACE) -> None:
    """SIGTERM the process's group, then SIGKILL whatever of it is left after ``grace`` seconds."""
    pgid = process.pid
    if not _signal_group(pgid, signal.SIGTERM):
        return
    deadline = time.monotonic() + grace
    gone = False
    try:
        # The group's other members are not our children, so there is nothing to wait on but the group
        # itself: poll it (every 50 ms) until it is empty or the grace is over.
        while time.monotonic() < deadline:
            if process.returncode is not None and not _group_alive(pgid):
                gone = True
                return
            await asyncio.sleep(_POLL)
    finally:
        if not gone and _signal_group(pgid, signal.SIGKILL):
            log.info("process group %d did not stop within %.1f s of SIGTERM: killed", pgid, grace)


Output = Callable[[bytes], None]
"""Where a command's output goes as it comes, besides the tail kept for its result."""


async def run_shell(
    command: str,
    *,
    cwd: Path,
    env: Mapping[str, str],
    limit: float,
    grace: float = KILL_GRACE,
    output: Output | None = None,
) -> ShellResult:
    """Run ``/bin/sh -c command`` in ``cwd`` with exactly ``env``; stop it (group and all) after ``limit``
    seconds and say so in the result (no TimeoutError: the output is wanted). Cancellation stops it the
    same way, then propagates."""
    return await run_process(("/bin/sh", "-c", command), cwd=cwd, env=env, limit=limit, grace=grace, output=output)


async def run_process(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    limit: float,
    grace: float = KILL_GRACE,
    output: Output | None = None,
) -> ShellResult:
    """Run the program ``argv`` as ``run_shell`` runs its shell: own process group, ``limit``, output."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.subprocess_exec(
        lambda: _Protocol(loop),
        *argv,
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    process = asyncio.subprocess.Process(transport, protocol, loop)
    assert process.stdout is not None
    tail = _Tail(OUTPUT_LIMIT, output)
    reader = asyncio.create_task(tail.drain(process.stdout))
    timed_out = False
    try:
        try:
            async with asyncio.timeout(max(limit, 0.0)):
                await protocol.exited.wait()
        except TimeoutError:
            timed_out = True
            await stop_group(process, grace)
    except BaseException:
        # Cancelled (or something unexpected): the command must not outlive this call. A second
        # cancellation during the grace still ends in SIGKILL (stop_group's finally).
        await stop_group(process, grace)
        raise
    finally:
        # Leftovers of the group (a background job the shell did not wait for) go now.
        _signal_group(process.pid, signal.SIGKILL)
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            async with asyncio.timeout(_DRAIN_AFTER_EXIT):
                await protocol.exited.wait()  # after a SIGKILL: its status, once the loop has reaped it
                await asyncio.shield(reader)
        reader.cancel()
        transport.close()
    return ShellResult(process.returncode, tail.text(), timed_out)
