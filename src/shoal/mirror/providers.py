"""What fills a new version of a mirror job: the ``http`` and ``command`` providers (``rsync`` and
``two-stage-rsync`` are ``shoal.mirror.rsync``'s).

A provider gets an empty staging directory and a deadline, fills the directory, and either returns or
raises ProviderError saying why not. It never touches ``versions/`` or ``current``: publishing is the
runner's, and only after the provider succeeded (``shoal.mirror.runner``).

http: ``upstream`` names one file, or (ending in ``/``) a directory index in the style of Apache's and
nginx's autoindex, whose file links are fetched. Each file is checked before the version can be published:

- the answer is 200 (no redirect to an error page passes: a redirect is followed, then must end in 200);
- the body has exactly the Content-Length the answer declared (a connection cut short is an error, not a
  shorter file); ``Accept-Encoding: identity`` is sent and bodies are not decompressed, so the length
  is the length of the bytes on disk;
- the file did not change during the fetch: a HEAD after the GET must report the same ETag,
  Last-Modified and Content-Length as the GET did (a GET's headers if the upstream refuses HEAD). An
  upstream that sends neither ETag nor Last-Modified is checked on its length alone.

Unchanged files are not fetched again: each http version records what it fetched (URL, ETag,
Last-Modified, length) in a hidden ``.shoal-http.json`` (the seeder does not publish hidden files), and
the next attempt asks with If-None-Match / If-Modified-Since; on 304 Not Modified the previous version's
file is hard-linked into the new one (copied where a link is impossible). Sharing inodes is safe because a
published version is never written into.

Index links are taken only when they name a file directly under the index: parent links (``../`` or an
absolute path above), sort links with a query (Apache's ``?C=N;O=D``), links to other hosts or schemes,
and subdirectories (a trailing ``/``) are skipped. A name is decoded and must be a plain file name (no
``/``, not ``.`` or ``..``), so a hostile index cannot write outside the staging directory. An index
that lists no files at all fails the attempt: publishing an empty version would empty the mirror.

command: ``/bin/sh -c command`` runs in the staging directory (``shoal.mirror.shell``), with the job's
environment; an exit status in ``success_exit_codes`` is success. ``$SHOAL_MIRROR_PREVIOUS`` names the
newest published version (empty if none) so that rsync can hard-link unchanged files from it with
``--link-dest="$SHOAL_MIRROR_PREVIOUS"`` instead of fetching everything again. Writing into files of the
previous version is never safe: they are being served.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import aiohttp

from shoal.core.errors import ProviderError, ProviderTimedOut, ShoalError
from shoal.core.mirror_config import JobSpec
from shoal.mirror.shell import KILL_GRACE, OUTPUT_LIMIT, Output, run_shell
from shoal.peer.request import file_name_from_url

log = logging.getLogger(__name__)

FETCH_PARALLELISM = 4
"""Files of one directory index fetched at once."""
INDEX_LIMIT = 16 << 20
"""Largest directory index read, in bytes."""
MANIFEST = ".shoal-http.json"
"""What an http version fetched, inside the version (hidden): the next attempt's conditional requests."""
_CHUNK = 1 << 20
_IDENTITY = {"Accept-Encoding": "identity", "User-Agent": "shoal-mirror"}


# -- http -------------------------------------------------------------------------------------------------


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            href = dict(attrs).get("href")
            if href:
                self.hrefs.append(href)


def safe_file_name(name: str) -> bool:
    """Whether ``name`` can only mean a file directly inside a directory."""
    return (
        name not in ("", ".", "..")
        and "/" not in name
        and "\\" not in name
        and "\0" not in name
        and len(name.encode("utf-8", "surrogateescape")) <= 255
    )


def index_files(base_url: str, html: str) -> dict[str, str]:
    """The files a directory index at ``base_url`` links to, as {file name: absolute URL}, in page order."""
    parser = _Links()
    parser.feed(html)
    parser.close()
    base = urlsplit(base_url)
    files: dict[str, str] = {}
    for href in parser.hrefs:
        url = urljoin(base_url, href.strip())
        parts = urlsplit(url)
        if parts.query or (parts.scheme, parts.netloc) != (base.scheme, base.netloc):
            continue
        if not parts.path.startswith(base.path) or parts.path == base.path:
            continue
        rest = parts.path[len(base.path) :]
        if "/" in rest:  # a subdirectory (trailing '/') or something deeper
            continue
        name = unquote(rest)
        if not safe_file_name(name):
            continue
        files.setdefault(name, parts._replace(fragment="").geturl())
    return files


def _http_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None


def _identity(headers: Mapping[str, str]) -> tuple[str | None, str | None, str | None]:
    return headers.get("ETag"), headers.get("Last-Modified"), headers.get("Content-Length")


async def _recheck(session: aiohttp.ClientSession, url: str) -> tuple[str | None, str | None, str | None]:
    """The file's identity now: a HEAD, or the headers of a GET whose body is not read."""
    async with session.head(url, headers=_IDENTITY, allow_redirects=True) as response:
        if response.status == 200:
            return _identity(response.headers)
        if response.status not in (405, 501):
            raise ProviderError(f"{url}: HTTP {response.status} when checking the file after its fetch")
    async with session.get(url, headers=_IDENTITY) as response:
        if response.status != 200:
            raise ProviderError(f"{url}: HTTP {response.status} when checking the file after its fetch")
        identity = _identity(response.headers)
        response.close()  # the body is not wanted; drop the connection rather than read it
        return identity


@dataclass(frozen=True, slots=True)
class Fetched:
    """One file of an http version, as its upstream described it."""

    url: str
    etag: str | None
    last_modified: str | None
    length: int


def load_manifest(version: Path | None) -> dict[str, Fetched]:
    """What the version at ``version`` fetched, by file name; empty when unknown or unreadable (then
    every file is fetched afresh, which is always correct)."""
    if version is None:
        return {}
    try:
        data = json.loads((version / MANIFEST).read_text(encoding="utf-8"))
        return {name: Fetched(**entry) for name, entry in data["files"].items()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


def _link_or_copy(source: Path, dest: Path) -> None:
    try:
        os.link(source, dest)
    except OSError:  # another filesystem, too many links, links not allowed
        shutil.copy2(source, dest)


def _reusable(url: str, previous: tuple[Path, Fetched] | None) -> tuple[Path, Fetched] | None:
    """The previous copy of ``url``, if it can answer a conditional request: same URL, a validator, and
    the file still there with the length it had."""
    if previous is None:
        return None
    path, fetched = previous
    if fetched.url != url or not (fetched.etag or fetched.last_modified):
        return None
    try:
        return previous if os.stat(path).st_size == fetched.length else None
    except OSError:
        return None


async def fetch_file(
    session: aiohttp.ClientSession, url: str, dest: Path, *, previous: tuple[Path, Fetched] | None = None
) -> Fetched:
    """Fetch ``url`` into ``dest`` with the checks in the module docstring; what was fetched. ``previous``
    (its file and record) is reused when the upstream answers 304 Not Modified. ProviderError on any
    failure (``dest`` may then hold a partial file: the caller discards it)."""
    reuse = _reusable(url, previous)
    headers = dict(_IDENTITY)
    if reuse is not None:
        if reuse[1].etag:
            headers["If-None-Match"] = reuse[1].etag
        if reuse[1].last_modified:
            headers["If-Modified-Since"] = reuse[1].last_modified
    try:
        async with session.get(url, headers=headers) as response:
            if response.status == 304 and reuse is not None:
                await asyncio.to_thread(_link_or_copy, reuse[0], dest)
                return reuse[1]
            if response.status != 200:
                raise ProviderError(f"{url}: HTTP {response.status} {response.reason or ''}".rstrip())
            before = _identity(response.headers)
            declared = response.content_length
            received = 0
            with dest.open("wb") as out:
                try:
                    async for chunk in response.content.iter_chunked(_CHUNK):
                        out.write(chunk)
                        received += len(chunk)
                except aiohttp.ClientPayloadError:
                    of = f" of {declared}" if declared is not None else ""
                    raise ProviderError(f"{url}: truncated: the body ended after {received}{of} bytes") from None
                await asyncio.to_thread(os.fsync, out.fileno())
        if declared is not None and received != declared:
            raise ProviderError(f"{url}: truncated: the body ended after {received} of {declared} bytes")
        after = await _recheck(session, url)
    except aiohttp.ClientPayloadError as exc:
        raise ProviderError(f"{url}: truncated or corrupt body: {exc}") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise ProviderError(f"{url}: {type(exc).__name__}: {exc}") from None
    if after != before:
        changed = [
            f"{what} {old!r} -> {new!r}"
            for what, old, new in zip(("ETag", "Last-Modified", "Content-Length"), before, after, strict=True)
            if old != new
        ]
        raise ProviderError(f"{url}: changed during the fetch ({'; '.join(changed)})")
    modified = _http_date(before[1])
    if modified is not None:
        os.utime(dest, (modified, modified))
    return Fetched(url=url, etag=before[0], last_modified=before[1], length=received)


async def _read_index(session: aiohttp.ClientSession, url: str) -> str:
    try:
        async with session.get(url, headers=_IDENTITY) as response:
            if response.status != 200:
                raise ProviderError(f"{url}: HTTP {response.status} for the directory index")
            body = await response.content.read(INDEX_LIMIT + 1)
            if len(body) > INDEX_LIMIT:
                raise ProviderError(f"{url}: the directory index is larger than {INDEX_LIMIT >> 20} MiB")
            return body.decode(response.charset or "utf-8", errors="replace")
    except (aiohttp.ClientError, OSError) as exc:
        raise ProviderError(f"{url}: {type(exc).__name__}: {exc}") from None


async def run_http(spec: JobSpec, staging: Path, parts: Path, previous: Path | None = None) -> None:
    """Fill ``staging`` from ``spec.upstream``; files are fetched into ``parts`` (an empty directory beside
    it) and moved into ``staging`` only once every one of them has passed its checks. ``previous`` is the
    newest published version, whose unchanged files are reused."""
    known = load_manifest(previous)
    fetched: dict[str, Fetched] = {}
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=60, sock_read=300)
    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:
        if spec.upstream.endswith("/"):
            files = index_files(spec.upstream, await _read_index(session, spec.upstream))
            if not files:
                raise ProviderError(f"{spec.upstream}: the directory index lists no files")
        else:
            files = {file_name_from_url(spec.upstream): spec.upstream}
        limit = asyncio.Semaphore(FETCH_PARALLELISM)

        async def fetch(name: str, url: str) -> None:
            async with limit:
                before = (previous / name, known[name]) if previous is not None and name in known else None
                fetched[name] = await fetch_file(session, url, parts / name, previous=before)

        try:
            async with asyncio.TaskGroup() as group:
                for name, url in files.items():
                    group.create_task(fetch(name, url))
        except ExceptionGroup as errors:
            # The first failure cancelled the rest; report it (a ProviderError explains itself).
            first = errors.exceptions[0]
            raise first if isinstance(first, ShoalError) else ProviderError(str(first)) from None
    for name in files:
        os.replace(parts / name, staging / name)
    manifest = {"files": {name: asdict(entry) for name, entry in fetched.items()}}
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    reused = sum(1 for name, entry in fetched.items() if known.get(name) == entry)
    log.info("%s: %d file(s) from %s, %d of them unchanged", spec.name, len(files), spec.upstream, reused)


# -- command ----------------------------------------------------------------------------------------------


async def run_command(
    spec: JobSpec,
    staging: Path,
    env: Mapping[str, str],
    limit: float,
    *,
    grace: float = KILL_GRACE,
    output: Output | None = None,
) -> int:
    """Run the job's command in ``staging``; its exit status when that counts as success, else
    ProviderError with the status and the tail of the output (ProviderTimedOut past ``limit`` seconds)."""
    command, success = spec.command, spec.success_exit_codes
    assert command is not None and success is not None, "JobSpec gives the command provider both"
    result = await run_shell(command, cwd=staging, env=env, limit=limit, grace=grace, output=output)
    if result.timed_out:
        raise ProviderTimedOut(f"command timed out after {limit:g} s", output=_tail(result.output))
    if result.returncode not in success:
        raise ProviderError(
            f"command failed with {result.status_text}: {_tail(result.output)}".rstrip(": "),
            returncode=result.returncode,
        )
    return result.returncode if result.returncode is not None else 0


def _tail(output: str) -> str:
    return output.strip()[-OUTPUT_LIMIT:]
