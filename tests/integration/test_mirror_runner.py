"""One attempt of a mirror job (shoal.mirror.runner) against real upstreams: an aiohttp server on loopback
that the test changes and breaks, and real /bin/sh processes for hooks and commands.

Each test checks what is on disk afterwards: the published versions, where ``current`` points, and that
nothing is left in ``.staging``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from shoal.core.mirror_config import Hooks, JobSpec, Retention
from shoal.core.mirror_values import NO_LIMIT
from shoal.http.listen import listen
from shoal.mirror.providers import index_files, safe_file_name
from shoal.mirror.runner import AttemptResult, current_version, run_attempt
from shoal.testing.poll import wait_until_async

DEADLINE = 30.0


# -- the upstream --------------------------------------------------------------------------------------------


@dataclass
class Upstream:
    """A static HTTP server whose files the test edits; ``truncate`` and ``change_during`` name files it
    misbehaves for."""

    url: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    truncate: set[str] = field(default_factory=set)
    change_during: set[str] = field(default_factory=set)
    extra_index_links: list[str] = field(default_factory=list)
    no_head: bool = False
    bodies: list[str] = field(default_factory=list)
    """The files sent whole (200), in order; a 304 is not a body."""

    def headers(self, name: str) -> dict[str, str]:
        body = self.files[name]
        return {
            "ETag": f'"{hashlib.sha256(body).hexdigest()[:16]}"',
            "Last-Modified": formatdate(1_700_000_000 + len(body), usegmt=True),
        }

    def app(self) -> web.Application:
        async def index(request: web.Request) -> web.Response:
            links = ['<a href="../">../</a>', '<a href="?C=N;O=D">Name</a>', '<a href="sub/">sub/</a>']
            links += [f'<a href="{name}">{name}</a>' for name in sorted(self.files)]
            links += self.extra_index_links
            return web.Response(
                text="<html><body><pre>" + "\n".join(links) + "</pre></body></html>", content_type="text/html"
            )

        async def file(request: web.Request) -> web.StreamResponse:
            name = request.match_info["name"]
            if name not in self.files:
                raise web.HTTPNotFound()
            body = self.files[name]
            headers = self.headers(name)
            if request.method == "HEAD":
                if self.no_head:
                    raise web.HTTPMethodNotAllowed("HEAD", ["GET"])
                return web.Response(headers={**headers, "Content-Length": str(len(body))})
            if request.headers.get("If-None-Match") == headers["ETag"]:
                return web.Response(status=304, headers=headers)
            self.bodies.append(name)
            response = web.StreamResponse(headers=self.headers(name))
            response.content_length = len(body)
            await response.prepare(request)
            if name in self.truncate:
                # Declare the whole length, send half, and hang up: what a dying upstream does.
                await response.write(body[: len(body) // 2])
                assert request.transport is not None
                request.transport.close()
                return response
            await response.write(body)
            if name in self.change_during:
                self.files[name] = body + b" (changed)"
            await response.write_eof()
            return response

        app = web.Application()
        app.router.add_get("/pub/", index)
        app.router.add_route("*", "/pub/{name}", file)
        return app


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    server = Upstream()
    runner, port = await listen(server.app(), "127.0.0.1", 0)
    server.url = f"http://127.0.0.1:{port}/pub/"
    try:
        yield server
    finally:
        await runner.cleanup()


# -- helpers -------------------------------------------------------------------------------------------------


def http_job(url: str, **kwargs: Any) -> JobSpec:
    options: dict[str, Any] = {"timeout": 60.0, **kwargs}
    return JobSpec(name="files", provider="http", upstream=url, **options)


def command_job(command: str, **kwargs: Any) -> JobSpec:
    options: dict[str, Any] = {"timeout": 60.0, **kwargs}
    return JobSpec(name="cmd", provider="command", upstream="rsync://up.test/x/", command=command, **options)


def published(job_dir: Path) -> dict[str, dict[str, bytes]]:
    """{version: {relative path: content}} of every published version."""
    versions = job_dir / "versions"
    result: dict[str, dict[str, bytes]] = {}
    for version in sorted(os.listdir(versions)) if versions.is_dir() else []:
        root = versions / version
        result[version] = {
            str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.startswith(".")  # as the seeder sees it: hidden files are not published
        }
    return result


def assert_no_staging(job_dir: Path) -> None:
    staging = job_dir / ".staging"
    assert not staging.exists() or os.listdir(staging) == [], os.listdir(staging)


def alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie (a container's init may be slow to reap)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def counter() -> tuple[list[int], Callable[[], Awaitable[None]]]:
    calls: list[int] = []

    async def on_syncing() -> None:
        calls.append(1)

    return calls, on_syncing


# -- http ----------------------------------------------------------------------------------------------------


async def test_http_single_file(upstream: Upstream, tmp_path: Path) -> None:
    upstream.files["data.bin"] = os.urandom(300_000)
    calls, on_syncing = counter()
    result = await run_attempt(http_job(upstream.url + "data.bin"), tmp_path / "job", on_syncing=on_syncing)
    assert result.ok, result.error
    assert result.version is not None
    assert result.size == 300_000
    assert calls == [1]
    assert published(tmp_path / "job") == {result.version: {"data.bin": upstream.files["data.bin"]}}
    assert current_version(tmp_path / "job") == tmp_path / "job" / "versions" / result.version
    assert os.readlink(tmp_path / "job" / "current") == f"versions/{result.version}"
    # The file keeps the upstream's Last-Modified.
    mtime = (tmp_path / "job" / "current" / "data.bin").stat().st_mtime
    assert mtime == 1_700_000_000 + 300_000
    assert_no_staging(tmp_path / "job")


async def test_http_directory_index_takes_only_its_files(upstream: Upstream, tmp_path: Path) -> None:
    upstream.files.update({"a.txt": b"alpha", "b c.txt": b"bravo", "c.iso": os.urandom(70_000)})
    upstream.extra_index_links = [
        '<a href="http://other.test/pub/evil">evil</a>',
        '<a href="/pub/a.txt#frag">again</a>',
        '<a href="..%2Fescape">escape</a>',
        '<a href="/etc/passwd">passwd</a>',
    ]
    result = await run_attempt(http_job(upstream.url), tmp_path / "job")
    assert result.ok, result.error
    assert published(tmp_path / "job")[result.version or ""] == upstream.files
    assert result.size == 5 + 5 + 70_000
    assert not (tmp_path / "escape").exists()
    assert_no_staging(tmp_path / "job")


async def test_an_upstream_that_changes_between_runs_makes_two_versions(upstream: Upstream, tmp_path: Path) -> None:
    job_dir = tmp_path / "job"
    upstream.files["a.txt"] = b"first"
    first = await run_attempt(http_job(upstream.url), job_dir)
    upstream.files["a.txt"] = b"second, longer"
    upstream.files["new.txt"] = b"new"
    second = await run_attempt(http_job(upstream.url), job_dir)
    assert first.ok and second.ok, (first, second)
    assert first.version is not None and second.version is not None
    assert second.version > first.version
    assert published(job_dir) == {
        first.version: {"a.txt": b"first"},
        second.version: {"a.txt": b"second, longer", "new.txt": b"new"},
    }
    assert (job_dir / "current" / "a.txt").read_bytes() == b"second, longer"


async def test_unchanged_files_are_not_fetched_again(upstream: Upstream, tmp_path: Path) -> None:
    job_dir = tmp_path / "job"
    upstream.files.update({"same.iso": os.urandom(100_000), "changes.txt": b"one"})
    first = await run_attempt(http_job(upstream.url), job_dir)
    assert sorted(upstream.bodies) == ["changes.txt", "same.iso"]
    upstream.bodies.clear()
    upstream.files["changes.txt"] = b"two"
    second = await run_attempt(http_job(upstream.url), job_dir)
    assert first.ok and second.ok, (first, second)
    assert upstream.bodies == ["changes.txt"]  # same.iso was answered 304
    old, new = job_dir / "versions" / (first.version or ""), job_dir / "versions" / (second.version or "")
    assert (new / "same.iso").read_bytes() == upstream.files["same.iso"]
    assert (new / "same.iso").stat().st_ino == (old / "same.iso").stat().st_ino
    assert (new / "changes.txt").read_bytes() == b"two"
    assert (old / "changes.txt").read_bytes() == b"one"
    assert (new / ".shoal-http.json").is_file()
    assert second.size == first.size == 100_003  # what is published: the hidden record is not counted


async def test_a_truncated_body_publishes_nothing(upstream: Upstream, tmp_path: Path) -> None:
    upstream.files.update({"good.txt": b"fine", "big.bin": os.urandom(200_000)})
    upstream.truncate.add("big.bin")
    result = await run_attempt(http_job(upstream.url), tmp_path / "job")
    assert not result.ok
    assert "big.bin: truncated: the body ended after 100000 of 200000 bytes" in result.error, result.error
    assert result.size == 0 and result.version is None
    assert published(tmp_path / "job") == {}
    assert not (tmp_path / "job" / "current").exists()
    assert_no_staging(tmp_path / "job")


async def test_a_truncated_body_keeps_the_previous_version_current(upstream: Upstream, tmp_path: Path) -> None:
    upstream.files["big.bin"] = b"x" * 1000
    good = await run_attempt(http_job(upstream.url + "big.bin"), tmp_path / "job")
    assert good.ok, good.error
    upstream.files["big.bin"] = os.urandom(200_000)
    upstream.truncate.add("big.bin")
    bad = await run_attempt(http_job(upstream.url + "big.bin"), tmp_path / "job")
    assert not bad.ok
    assert list(published(tmp_path / "job")) == [good.version]
    assert (tmp_path / "job" / "current" / "big.bin").read_bytes() == b"x" * 1000


async def test_a_file_that_changes_during_its_fetch_publishes_nothing(upstream: Upstream, tmp_path: Path) -> None:
    upstream.files.update({"a.txt": b"steady", "moving.txt": b"before"})
    upstream.change_during.add("moving.txt")
    result = await run_attempt(http_job(upstream.url), tmp_path / "job")
    assert not result.ok
    assert "moving.txt: changed during the fetch" in result.error
    assert "ETag" in result.error
    assert published(tmp_path / "job") == {}
    assert_no_staging(tmp_path / "job")


async def test_a_change_is_caught_without_head_too(upstream: Upstream, tmp_path: Path) -> None:
    upstream.no_head = True
    upstream.files["steady.txt"] = b"steady"
    good = await run_attempt(http_job(upstream.url + "steady.txt"), tmp_path / "job")
    assert good.ok, good.error
    upstream.files["moving.txt"] = b"before"
    upstream.change_during.add("moving.txt")
    bad = await run_attempt(http_job(upstream.url + "moving.txt"), tmp_path / "job")
    assert "moving.txt: changed during the fetch" in bad.error


async def test_http_errors_fail_the_attempt(upstream: Upstream, tmp_path: Path) -> None:
    result = await run_attempt(http_job(upstream.url + "missing.bin"), tmp_path / "job")
    assert not result.ok
    assert "HTTP 404" in result.error
    empty = await run_attempt(http_job(upstream.url), tmp_path / "job")
    assert not empty.ok
    assert "lists no files" in empty.error
    assert published(tmp_path / "job") == {}


# -- command and hooks ---------------------------------------------------------------------------------------


async def test_command_provider_with_hooks_and_their_environment(tmp_path: Path) -> None:
    log = tmp_path / "log"
    record = f'echo "$0 $SHOAL_MIRROR_JOB $SHOAL_MIRROR_ATTEMPT $SHOAL_MIRROR_EXIT_STATUS" >> {log}'
    spec = command_job(
        'echo "$SHOAL_MIRROR_UPSTREAM $EXTRA" > upstream.txt && mkdir sub && printf x > sub/f && pwd > where',
        env={"EXTRA": "from-env"},
        hooks=Hooks(
            pre_job=(record.replace("$0", "pre_job"),),
            pre_exec=(record.replace("$0", "pre_exec"),),
            post_exec=(record.replace("$0", "post_exec"),),
            post_success=(
                record.replace("$0", "post_success"),
                'test -f "$SHOAL_MIRROR_WORKING_DIR/upstream.txt"',
            ),
            post_fail=(record.replace("$0", "post_fail"),),
        ),
    )
    result = await run_attempt(spec, tmp_path / "job", attempt=2)
    assert result.ok, result.error
    files = published(tmp_path / "job")[result.version or ""]
    assert files["upstream.txt"] == b"rsync://up.test/x/ from-env\n"
    assert files["sub/f"] == b"x"
    # The command ran in the staging directory of its version.
    assert files["where"].decode().strip() == str(tmp_path / "job" / ".staging" / (result.version or "?"))
    assert log.read_text().splitlines() == [
        "pre_job cmd 2 ",
        "pre_exec cmd 2 ",
        "post_exec cmd 2 0",
        "post_success cmd 2 0",
    ]


async def test_a_configured_success_exit_code_counts_as_success(tmp_path: Path) -> None:
    spec = command_job("echo partial > f; exit 24", success_exit_codes=frozenset({0, 24}))
    result = await run_attempt(spec, tmp_path / "job")
    assert result.ok, result.error
    assert published(tmp_path / "job")[result.version or ""] == {"f": b"partial\n"}


async def test_a_failing_command_reports_its_status_and_output(tmp_path: Path) -> None:
    seen = tmp_path / "seen"
    spec = command_job(
        "echo some output; echo oops >&2; exit 24",
        hooks=Hooks(post_fail=(f'echo "$SHOAL_MIRROR_EXIT_STATUS|$SHOAL_MIRROR_ERROR" > {seen}',)),
    )
    result = await run_attempt(spec, tmp_path / "job")
    assert not result.ok
    assert result.error == "command failed with exit status 24: some output\noops"
    assert seen.read_text() == "24|command failed with exit status 24: some output\noops\n"
    assert published(tmp_path / "job") == {}
    assert_no_staging(tmp_path / "job")


async def test_a_failing_pre_job_hook_fails_with_its_output(tmp_path: Path) -> None:
    calls, on_syncing = counter()
    ran = tmp_path / "ran"
    spec = command_job(
        f"touch {ran}",
        hooks=Hooks(pre_job=("echo cannot reach the upstream; exit 3",), post_fail=("echo cleanup; exit 1",)),
    )
    result = await run_attempt(spec, tmp_path / "job", on_syncing=on_syncing)
    assert not result.ok
    assert "pre_job hook 1 `echo cannot reach the upstream; exit 3` failed with exit status 3" in result.error
    assert "cannot reach the upstream" in result.error
    # The post_fail hook's own failure is added, not instead.
    assert result.error.endswith("post_fail hook 1 `echo cleanup; exit 1` failed with exit status 1: cleanup")
    assert calls == []
    assert not ran.exists()
    assert published(tmp_path / "job") == {}


async def test_a_failing_post_success_hook_publishes_nothing(tmp_path: Path) -> None:
    spec = command_job("echo data > f", hooks=Hooks(post_success=("echo verification failed >&2; false",)))
    result = await run_attempt(spec, tmp_path / "job")
    assert not result.ok
    assert "post_success hook 1" in result.error and "verification failed" in result.error
    assert published(tmp_path / "job") == {}
    assert_no_staging(tmp_path / "job")


async def test_a_failing_post_exec_hook_fails_the_attempt(tmp_path: Path) -> None:
    result = await run_attempt(command_job("true", hooks=Hooks(post_exec=("exit 5",))), tmp_path / "job")
    assert not result.ok
    assert result.error == "post_exec hook 1 `exit 5` failed with exit status 5"


async def test_output_in_the_error_is_bounded_to_its_tail(tmp_path: Path) -> None:
    spec = command_job("head -c 100000 /dev/zero | tr '\\0' a; echo; echo THE END; exit 1")
    result = await run_attempt(spec, tmp_path / "job")
    assert not result.ok
    assert result.error.endswith("THE END")
    assert len(result.error) < 4096 + 100


async def test_a_command_past_its_timeout_is_killed_with_its_children(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    spec = command_job(f"echo started; sleep 1000 & echo $! > {pid_file}; wait", timeout=1.0)
    result = await run_attempt(spec, tmp_path / "job")
    assert not result.ok
    assert result.error == "timed out after 1 s: started"
    child = int(pid_file.read_text())
    await wait_until_async(lambda: not alive(child), f"the background sleep {child} is killed")
    assert published(tmp_path / "job") == {}
    assert_no_staging(tmp_path / "job")


async def test_a_group_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    # Both the shell and its child ignore SIGTERM (the disposition is inherited): only SIGKILL ends them.
    spec = command_job(f"trap '' TERM; sleep 1000 & echo $! > {pid_file}; wait; wait", timeout=1.0)
    result = await run_attempt(spec, tmp_path / "job", kill_grace=0.5)
    assert result.error.startswith("timed out after 1 s")
    child = int(pid_file.read_text())
    await wait_until_async(lambda: not alive(child), f"the SIGTERM-proof sleep {child} is killed")


async def test_a_hook_past_the_deadline_times_the_attempt_out(tmp_path: Path) -> None:
    spec = command_job("true", timeout=1.0, hooks=Hooks(pre_exec=("sleep 1000",)))
    result = await run_attempt(spec, tmp_path / "job")
    assert result.error == "timed out after 1 s (in the pre_exec hook 1 `sleep 1000`)"


async def test_a_timeout_of_zero_sets_no_deadline(tmp_path: Path) -> None:
    # NO_LIMIT, as a converted tunasync job without a timeout has: read as "0 seconds" it would time out
    # before its first hook.
    spec = command_job("echo synced > README", timeout=NO_LIMIT, hooks=Hooks(pre_exec=("true",)))
    result = await run_attempt(spec, tmp_path / "job")
    assert result.ok, result.error
    assert (tmp_path / "job" / "current" / "README").read_text() == "synced\n"


async def test_retention_keeps_the_newest_versions(tmp_path: Path) -> None:
    spec = command_job('echo "$SHOAL_MIRROR_VERSION" > version', retention=Retention(keep_versions=2))
    results: list[AttemptResult] = []
    for _ in range(3):
        results.append(await run_attempt(spec, tmp_path / "job"))
    assert all(r.ok for r in results), results
    versions = [r.version or "" for r in results]
    assert versions == sorted(versions) and len(set(versions)) == 3
    assert published(tmp_path / "job") == {v: {"version": f"{v}\n".encode()} for v in versions[1:]}
    assert (tmp_path / "job" / "current" / "version").read_text().strip() == versions[2]
    assert_no_staging(tmp_path / "job")


async def test_retention_by_age_removes_old_versions_but_never_the_newest(tmp_path: Path) -> None:
    job_dir = tmp_path / "job"
    old = job_dir / "versions" / "20000101T000000Z"
    old.mkdir(parents=True)
    (old / "f").write_text("old")
    (job_dir / "versions" / "not-a-version").mkdir()
    spec = command_job("echo new > f", retention=Retention(max_age=86400.0))
    result = await run_attempt(spec, job_dir)
    assert result.ok, result.error
    # The old version is gone, and a directory that is not a version is left alone.
    assert sorted(os.listdir(job_dir / "versions")) == sorted([result.version or "?", "not-a-version"])


async def test_the_previous_version_is_offered_for_link_dest(tmp_path: Path) -> None:
    spec = command_job('if [ -n "$SHOAL_MIRROR_PREVIOUS" ]; then cp "$SHOAL_MIRROR_PREVIOUS/n" n; fi; echo x >> n')
    first = await run_attempt(spec, tmp_path / "job")
    second = await run_attempt(spec, tmp_path / "job")
    assert first.ok and second.ok
    assert published(tmp_path / "job")[second.version or ""] == {"n": b"x\nx\n"}


async def test_a_crashed_attempt_leaves_only_staging_which_the_next_removes(tmp_path: Path) -> None:
    leftover = tmp_path / "job" / ".staging" / "20200101T000000Z"
    leftover.mkdir(parents=True)
    (leftover / "half").write_bytes(b"half a file")
    result = await run_attempt(command_job("echo whole > f"), tmp_path / "job")
    assert result.ok, result.error
    assert published(tmp_path / "job") == {result.version: {"f": b"whole\n"}}
    assert_no_staging(tmp_path / "job")


async def test_cancellation_kills_the_group_and_leaves_no_staging(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    spec = command_job(f"echo partial > f; sleep 1000 & echo $! > {pid_file}; wait")
    task = asyncio.create_task(run_attempt(spec, tmp_path / "job"))
    await wait_until_async(lambda: pid_file.exists() and pid_file.read_text().strip() != "", "the command started")
    child = int(pid_file.read_text())
    assert alive(child)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_until_async(lambda: not alive(child), f"the sleep {child} is killed")
    assert published(tmp_path / "job") == {}
    assert not (tmp_path / "job" / "current").exists()
    assert_no_staging(tmp_path / "job")


async def test_cancelling_an_http_fetch_leaves_no_staging(upstream: Upstream, tmp_path: Path) -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = 2000
        await response.prepare(request)
        await response.write(b"x" * 1000)
        started.set()
        await release.wait()
        return response

    app = web.Application()
    app.router.add_get("/slow.bin", slow)
    runner, port = await listen(app, "127.0.0.1", 0)
    try:
        task = asyncio.create_task(run_attempt(http_job(f"http://127.0.0.1:{port}/slow.bin"), tmp_path / "job"))
        async with asyncio.timeout(DEADLINE):
            await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        release.set()
        await runner.cleanup()
    assert published(tmp_path / "job") == {}
    assert_no_staging(tmp_path / "job")


async def test_a_process_a_hook_leaves_behind_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "stray.pid"
    # The hook exits at once but leaves a sleep holding its output pipe; the attempt must neither wait for
    # it nor let it outlive the attempt.
    spec = command_job("echo data > f", hooks=Hooks(pre_job=(f"sleep 1000 & echo $! > {pid_file}",)))
    result = await run_attempt(spec, tmp_path / "job")
    assert result.ok, result.error
    stray = int(pid_file.read_text())
    await wait_until_async(lambda: not alive(stray), f"the stray sleep {stray} is killed")


async def test_an_http_fetch_past_the_timeout_fails(tmp_path: Path) -> None:
    release = asyncio.Event()

    async def stalled(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = 2000
        await response.prepare(request)
        await response.write(b"x" * 1000)
        await release.wait()
        return response

    app = web.Application()
    app.router.add_get("/stalled.bin", stalled)
    runner, port = await listen(app, "127.0.0.1", 0)
    try:
        result = await run_attempt(http_job(f"http://127.0.0.1:{port}/stalled.bin", timeout=1.0), tmp_path / "job")
    finally:
        release.set()
        await runner.cleanup()
    assert result.error == "timed out after 1 s"
    assert published(tmp_path / "job") == {}
    assert_no_staging(tmp_path / "job")


# -- directory indexes, as servers write them -----------------------------------------------------------------

APACHE = """<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 3.2 Final//EN"><html><body><h1>Index of /pub/debian</h1>
<table><tr><th><a href="?C=N;O=D">Name</a></th><th><a href="?C=M;O=A">Last modified</a></th></tr>
<tr><td><img src="/icons/back.gif" alt="[PARENTDIR]"></td><td><a href="/pub/">Parent Directory</a></td></tr>
<tr><td><a href="README">README</a></td></tr>
<tr><td><a href="file%20one.tar.gz">file one.tar.gz</a></td></tr>
<tr><td><a href="dists/">dists/</a></td></tr>
<tr><td><a href="https://mirror.example.org/pub/debian/ls-lR.gz">elsewhere</a></td></tr>
<tr><td><a href="%2E%2E">dots</a></td></tr>
</table></body></html>"""

NGINX = """<html><head><title>Index of /pub/debian/</title></head><body><h1>Index of /pub/debian/</h1><hr><pre>
<a href="../">../</a>
<a href="dists/">dists/</a>                                             01-Jan-2024 00:00       -
<a href="ls-lR.gz">ls-lR.gz</a>                                           01-Jan-2024 00:00    1234
<a href="caf%C3%A9.txt">caf\u00e9.txt</a>                                       01-Jan-2024 00:00      12
<a href="http://origin.test/pub/debian/abs.txt">abs.txt</a>
</pre><hr></body></html>"""


def test_apache_index() -> None:
    base = "http://origin.test/pub/debian/"
    assert index_files(base, APACHE) == {
        "README": base + "README",
        "file one.tar.gz": base + "file%20one.tar.gz",
    }


def test_nginx_index() -> None:
    base = "http://origin.test/pub/debian/"
    assert index_files(base, NGINX) == {
        "ls-lR.gz": base + "ls-lR.gz",
        "caf\u00e9.txt": base + "caf%C3%A9.txt",
        "abs.txt": base + "abs.txt",
    }


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a\\b", "nul\0", "x" * 256])
def test_unsafe_file_names(name: str) -> None:
    assert not safe_file_name(name)
