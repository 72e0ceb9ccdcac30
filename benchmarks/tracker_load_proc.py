"""The processes around ``tracker_load.py``: the tracker it starts, a scratch database on a SQL server, the
tracker's RSS, a CPU quota for a tracker (a cgroup of its own), the database server's CPU, and a py-spy
profile summed by function. Not run on its own."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from shoal.testing.cpu import process_cpu_seconds

_LISTENING = re.compile(r"listening on (http://\S+)")
_OWN = re.compile(r"[(/]shoal/(?!cli/|__main__|http/listen)")
"""Shoal's frames, less the command's and the server's outer ones that every sample of the loop shares."""


@dataclass
class Tracker:
    proc: subprocess.Popen[str]
    url: str

    @property
    def pid(self) -> int:
        return self.proc.pid

    @classmethod
    @contextlib.contextmanager
    def start(
        cls,
        db: str,
        src: Path,
        *,
        peer_ttl: float,
        pin: bool,
        log: Path,
        extra: Sequence[str] = (),
        quota: CpuQuota | None = None,
    ) -> Iterator[Tracker]:
        """``shoal tracker`` on a kernel-chosen port, on CPU 0 when ``pin``; stderr (its log) goes to ``log``;
        ``extra``: more of its options; ``quota``: the cgroup it runs in from its first instruction."""
        argv = [sys.executable, "-m", "shoal", "tracker", "--host", "127.0.0.1", "--port", "0", "--db", db]
        # The whole fleet announces from this one address: no per-source limit on new peers.
        argv += ["--peer-ttl", f"{peer_ttl:g}", "--max-new-peers-per-source", "0", *extra]
        if pin:
            argv = ["taskset", "-c", "0", *argv]
        env = {**os.environ, "PYTHONPATH": str(src)}
        with log.open("w") as err:
            enter = None if quota is None else quota.enter
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True, env=env, preexec_fn=enter)
        assert proc.stdout is not None
        url = None
        for line in proc.stdout:
            if match := _LISTENING.search(line):
                url = match.group(1)
                break
        if url is None:
            proc.wait()
            sys.stderr.write(log.read_text()[-4000:])
            raise SystemExit(f"the tracker did not start (exit {proc.returncode}); its log is above")
        # Whatever it prints later must not fill the pipe and stall it.
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        try:
            yield cls(proc, url)
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            errors = [line for line in log.read_text().splitlines() if "ERROR" in line or "Traceback" in line]
            if errors:
                print(f"the tracker logged {len(errors)} errors, the first: {errors[0][:300]}", file=sys.stderr)

    @staticmethod
    def profile(pid: int, seconds: float, out: Path, pin: bool) -> subprocess.Popen[bytes]:
        """py-spy sampling ``pid`` for ``seconds`` (the thread holding the GIL, so waits in the event loop's
        select and the database's threads do not dilute the shares; by function, without pausing the
        process) into ``out`` as collapsed stacks; on CPU 1 with the generator when ``pin``."""
        spy = shutil.which("py-spy")
        if spy is None:
            raise SystemExit("--profile needs py-spy (pip install py-spy)")
        argv = [spy, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))), "--rate", "250"]
        argv += ["--gil", "--format", "raw", "--function", "--nonblocking", "--output", str(out)]
        if pin:
            argv = ["taskset", "-c", "1", *argv]
        return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


CGROUP_CPU = Path("/sys/fs/cgroup/cpu")
"""cgroup v1's cpu controller (``cpu.cfs_quota_us`` over ``cpu.cfs_period_us``): needs root."""


@dataclass
class CpuQuota:
    """A cgroup of its own capping its processes (threads included) at ``cores`` of CPU time, so a tracker is
    bound by its CPU whatever the rest of the machine does; made by :meth:`made`, removed when it ends."""

    path: Path
    cores: float

    @classmethod
    @contextlib.contextmanager
    def made(cls, name: str, cores: float) -> Iterator[CpuQuota]:
        """The cgroup ``name`` under the cpu controller, at ``cores`` (0 < cores); removed at the end (its
        processes must have exited by then), also on error."""
        if not 0 < cores <= (os.cpu_count() or 1):
            raise SystemExit(f"a CPU quota is more than 0 and at most the machine's {os.cpu_count()} cores: {cores}")
        if not (CGROUP_CPU / "cpu.cfs_quota_us").exists() or not os.access(CGROUP_CPU, os.W_OK):
            raise SystemExit(f"a CPU quota needs cgroup v1's cpu controller at {CGROUP_CPU}, writable (root)")
        path = CGROUP_CPU / name
        path.mkdir()
        try:
            period = int((path / "cpu.cfs_period_us").read_text())
            (path / "cpu.cfs_quota_us").write_text(str(round(cores * period)))
            yield cls(path, cores)
        finally:
            _remove_cgroup(path)

    def enter(self) -> None:
        """Move the calling process into the cgroup (a ``preexec_fn``: the child, before it runs the tracker)."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def throttled(self) -> tuple[int, float]:
        """Periods in which the cgroup ran out of its quota, and the seconds it waited for the next one
        (cumulative; ``cpu.stat``)."""
        stat = dict(line.split() for line in (self.path / "cpu.stat").read_text().splitlines())
        return int(stat["nr_throttled"]), int(stat["throttled_time"]) / 1e9


def _remove_cgroup(path: Path) -> None:
    """rmdir a cgroup once its processes are gone: a killed process leaves it a moment after its parent reaped
    it, so a busy cgroup is tried again for up to 5 s."""
    deadline = time.monotonic() + 5
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                print(f"could not remove the cgroup {path}: rmdir it by hand", file=sys.stderr)
                return
            time.sleep(0.1)


def database_cpu(server: str) -> Callable[[], float]:
    """A reading of the CPU seconds of the database server's processes (``postgres`` or ``mariadbd``/``mysqld``,
    by their command name): each call sums every such process alive then, so a backend that exits between two
    readings takes its time with it (the benchmark's connections stay open through a window)."""
    names = {"postgres"} if server.startswith("postgres") else {"mariadbd", "mysqld"}

    def read() -> float:
        total = 0.0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() in names:
                    total += process_cpu_seconds(int(entry.name))
        return total

    return read


def read_rss_mb(pid: int) -> float | None:
    """The resident set of ``pid`` in MB (VmRSS), None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


@contextlib.contextmanager
def scratch_database(url: str | None, tmp: Path) -> Iterator[str]:
    """The database the tracker gets: a fresh SQLite file when ``url`` is None, a SQLite URL as given, and on
    a PostgreSQL or MySQL/MariaDB server a database ``shoal_load_PID`` of its own, dropped at the end (the
    server's ``test`` database is the template the test suite copies: it must stay empty)."""
    if url is None:
        yield f"sqlite:///{tmp / 'tracker.db'}"
        return
    if url.startswith("sqlite"):
        yield url
        return
    from sqlalchemy import make_url, text

    from shoal.storage.db import create_engine

    name = f"shoal_load_{os.getpid()}"

    async def admin(sql: str) -> None:
        engine = create_engine(url)
        try:
            async with engine.connect() as conn:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.execute(text(sql))
        finally:
            await engine.dispose()

    force = " WITH (FORCE)" if url.startswith("postgres") else ""
    asyncio.run(admin(f"DROP DATABASE IF EXISTS {name}{force}"))
    asyncio.run(admin(f"CREATE DATABASE {name}"))
    try:
        yield make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(admin(f"DROP DATABASE IF EXISTS {name}{force}"))


def top_functions(collapsed: Path, count: int) -> list[str]:
    """The functions of a py-spy raw profile (``frame;frame;... samples`` lines) with the largest shares of
    the samples: by self (the innermost Python frame: a C call, sqlite3's say, is charged to its caller),
    and by total (anywhere in the stack, once per stack) among Shoal's own functions, where the outer frames
    every sample shares (the event loop, the CLI) do not crowd out the hot spots."""
    leaf: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = [f for f in stack.split(";") if f]
        if not n.isdigit() or not frames:
            continue
        samples += int(n)
        leaf[_short(frames[-1])] += int(n)
        for frame in {f for f in frames if _OWN.search(f)}:
            total[_short(frame)] += int(n)
    if not samples:
        return [f"{collapsed}: no samples"]
    out = [f"profile {collapsed}: {samples} samples; top {count} functions by self share, then Shoal's by total"]
    out += [f"  self  {n / samples:6.1%}  {f}" for f, n in leaf.most_common(count)]
    out += [f"  total {n / samples:6.1%}  {f}" for f, n in total.most_common(count)]
    return out


def _short(frame: str) -> str:
    """``function (path/to/module.py:line)`` -> ``function (module.py:line)``."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rstrip(')').rsplit('/', 1)[-1]})" if where else name
