"""A real HTTP origin for tests, benchmarks and the demo: serves a directory over aiohttp.

Range requests, ETag, Last-Modified and If-Range come from ``web.FileResponse`` (what a real static
server does). Switches make it misbehave the ways real origins do: ``no_range`` answers every request
with the whole file (200), ``rate`` caps the bytes per second it sends. ``digest_headers`` publishes digests
(:data:`DIGEST_HEADERS`) as a real origin computes them: ``Repr-Digest``, ``Digest`` and
``x-amz-checksum-sha256`` of the whole file, ``Content-Digest`` and ``Content-MD5`` of the body sent (on a
206, the range); ``wrong_digests`` makes each of them a digest of other bytes (an unsound origin).
``GET /_stats`` reports the bytes sent, so tests and benchmarks measure what left the origin rather than
trusting the peers' counters, and the query strings of the file requests it served, so a test can tell
which signed URL reached it. ``POST /_rate?to=RATE`` changes the cap of an origin started with one, so a
test can hold a download back until something it waits for has happened, then let it finish.
``log_requests`` prints one line per file request sent by sendfile (not the paced or streamed ones) once
its response has ended (``request CLIENT START-END STATUS complete|aborted T0 T1``: the byte range asked,
end exclusive, and the wall-clock times of its start and end), so a lab can tell which bytes left the
origin more than once.

Run it as a process: ``python -m shoal.testing.origin DIR [--port 0] [--no-range] [--rate 20M]
[--digest-header NAME]... [--wrong-digests] [--log-requests]``; it prints
``origin listening on http://HOST:PORT`` once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from shoal.core.errors import UsageError
from shoal.core.rate import TokenBucket
from shoal.core.units import parse_rate
from shoal.http.listen import serve

DIGEST_HEADERS = ("repr-digest", "content-digest", "digest", "x-amz-checksum-sha256", "content-md5")


@dataclass
class OriginStats:
    requests: int = 0
    bytes_sent: int = 0
    streaming: int = 0
    """Streamed responses (paced, without Range, or with digests) still being written: none once every
    client of them has hung up or been sent everything, so a test can tell that a download it stopped is
    no longer being sent anything, without waiting a while to see."""
    queries: set[str] = field(default_factory=set)
    """The distinct query strings of the file requests served (raw, as sent)."""


def build_origin(
    root: Path,
    *,
    no_range: bool = False,
    rate: int | None = None,
    require_header: tuple[str, str] | None = None,
    digest_headers: tuple[str, ...] = (),
    wrong_digests: bool = False,
    log_requests: bool = False,
) -> web.Application:
    root = root.resolve()
    stats = OriginStats()
    bucket = TokenBucket(rate=rate, burst=min(rate, 256 * 1024)) if rate else None

    def locate(request: web.Request) -> Path:
        rel = request.match_info["path"]
        path = (root / rel).resolve()
        if root not in path.parents or not path.is_file():
            raise web.HTTPNotFound()
        return path

    async def serve(request: web.Request) -> web.StreamResponse:
        path = locate(request)
        if require_header and request.headers.get(require_header[0]) != require_header[1]:
            raise web.HTTPForbidden()
        stats.requests += 1
        stats.queries.add(request.query_string)
        if bucket is not None or no_range or digest_headers:
            digests = _Digests(digest_headers, wrong_digests)
            return await _stream(request, path, no_range, bucket, stats, digests)
        return _CountedFileResponse(path, stats, log_requests)

    async def stats_view(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "requests": stats.requests,
                "bytes_sent": stats.bytes_sent,
                "streaming": stats.streaming,
                "queries": sorted(stats.queries),
            }
        )

    async def rate_view(request: web.Request) -> web.Response:
        if bucket is None:
            raise web.HTTPConflict(text="this origin was started without --rate")
        try:
            bucket.rate = float(parse_rate(request.query.get("to", "")))
        except UsageError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        bucket.burst = min(bucket.rate, 256 * 1024)
        # The debt of the bytes reserved at the old rate is theirs: their senders are already waiting it out.
        bucket.tokens = max(0.0, min(bucket.tokens, bucket.burst))
        return web.json_response({"rate": bucket.rate})

    app = web.Application()
    app.router.add_get("/_stats", stats_view)
    app.router.add_post("/_rate", rate_view)
    app.router.add_get("/{path:.+}", serve)
    return app


class _CountedFileResponse(web.FileResponse):
    """sendfile, counting the body bytes once aiohttp has sent them (it prepares after the handler)."""

    def __init__(self, path: Path, stats: OriginStats, log_requests: bool = False) -> None:
        super().__init__(path)
        self._stats = stats
        self._log_requests = log_requests

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if not self._log_requests:
            writer = await super().prepare(request)
            self._stats.bytes_sent += self.content_length or 0
            return writer
        began, complete = time.time(), False
        try:
            writer = await super().prepare(request)  # returns once sendfile has handed over the last byte
            self._stats.bytes_sent += self.content_length or 0
            complete = True
            return writer
        finally:
            _log_request(request, self, complete, began)


def _log_request(request: web.BaseRequest, response: web.StreamResponse, complete: bool, began: float) -> None:
    """One line on stdout for a file request that has ended (see the module docstring)."""
    status, content_range = response.status, response.headers.get("Content-Range")
    span = f"0-{response.content_length}" if status == 200 else "-"
    if content_range is not None and content_range.startswith("bytes ") and "/" in content_range:
        first, _, last = content_range[6:].partition("/")[0].partition("-")
        span = f"{first}-{int(last) + 1}"
    outcome = "complete" if complete else "aborted"
    print(f"request {request.remote} {span} {status} {outcome} {began:.3f} {time.time():.3f}", flush=True)


@dataclass(frozen=True)
class _Digests:
    """The digest headers to send, computed from the file each time (test files are small)."""

    names: tuple[str, ...]
    wrong: bool

    def headers(self, path: Path, start: int, end: int) -> dict[str, str]:
        if not self.names:
            return {}
        data = path.read_bytes()
        whole, body = data, data[start:end]
        if self.wrong:
            whole, body = b"other bytes" + whole, b"other bytes" + body

        def b64(algorithm: str, content: bytes) -> str:
            return base64.b64encode(hashlib.new(algorithm, content).digest()).decode()

        values = {
            "repr-digest": f"sha-256=:{b64('sha256', whole)}:, sha-512=:{b64('sha512', whole)}:",
            "content-digest": f"sha-256=:{b64('sha256', body)}:",
            "digest": f"SHA-256={b64('sha256', whole)}",
            "x-amz-checksum-sha256": b64("sha256", whole),
            "content-md5": b64("md5", body),
        }
        return {name: values[name] for name in self.names}


async def _stream(
    request: web.Request,
    path: Path,
    no_range: bool,
    bucket: TokenBucket | None,
    stats: OriginStats,
    digests: _Digests,
) -> web.StreamResponse:
    """Send the file (or the asked range) in chunks, paced by ``bucket``, counting bytes as they go."""
    st = await asyncio.to_thread(path.stat)
    start, end = 0, st.st_size
    status = 200
    rng = request.http_range
    etag = f'"{st.st_mtime_ns:x}-{st.st_size:x}"'
    # RFC 9110 13.1.5: a Range with an If-Range that no longer matches gets the whole (new) file.
    if_range_ok = request.headers.get("If-Range", etag) == etag
    if not no_range and if_range_ok and (rng.start is not None or rng.stop is not None):
        start = rng.start or 0
        end = min(rng.stop, st.st_size) if rng.stop is not None else st.st_size
        if start < 0:
            start, end = max(0, st.st_size + start), st.st_size
        status = 206
    response = web.StreamResponse(status=status)
    response.headers["ETag"] = etag
    response.last_modified = st.st_mtime
    response.content_length = end - start
    if status == 206:
        response.headers["Content-Range"] = f"bytes {start}-{end - 1}/{st.st_size}"
    response.headers.update(await asyncio.to_thread(digests.headers, path, start, end))
    stats.streaming += 1
    try:
        return await _send(request, response, path, start, end, bucket, stats)
    finally:
        stats.streaming -= 1


async def _send(
    request: web.Request,
    response: web.StreamResponse,
    path: Path,
    start: int,
    end: int,
    bucket: TokenBucket | None,
    stats: OriginStats,
) -> web.StreamResponse:
    await response.prepare(request)
    sent = 0
    f = await asyncio.to_thread(open, path, "rb")
    try:
        f.seek(start)
        while sent < end - start:
            chunk = await asyncio.to_thread(f.read, min(64 * 1024, end - start - sent))
            if not chunk:
                break
            if bucket is not None:
                delay = bucket.reserve(len(chunk), time.monotonic())
                if delay:
                    await asyncio.sleep(delay)
            await response.write(chunk)
            sent += len(chunk)
            stats.bytes_sent += len(chunk)
    except ConnectionResetError:
        return response  # the client hung up (a probe, or a peer that died): nothing more to send
    finally:
        f.close()
    await response.write_eof()
    return response


async def _main(args: argparse.Namespace) -> None:
    required = None
    if args.require_header:
        name, _, value = args.require_header.partition(":")
        required = (name.strip(), value.strip())
    app = build_origin(
        Path(args.root),
        no_range=args.no_range,
        rate=parse_rate(args.rate) if args.rate else None,
        require_header=required,
        digest_headers=tuple(args.digest_header),
        wrong_digests=args.wrong_digests,
        log_requests=args.log_requests,
    )
    await serve(app, args.host, args.port, "origin")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--no-range", action="store_true")
    parser.add_argument("--rate", default=None, help="cap on bytes per second sent (1024-based units)")
    parser.add_argument("--require-header", default=None, help="'Name: value' every request must carry (else 403)")
    parser.add_argument(
        "--digest-header",
        action="append",
        default=[],
        choices=DIGEST_HEADERS,
        help="publish this digest header (repeatable)",
    )
    parser.add_argument("--wrong-digests", action="store_true", help="publish digests of other bytes")
    parser.add_argument("--log-requests", action="store_true", help="print a line per file request once it ends")
    args = parser.parse_args()
    if not os.path.isdir(args.root):
        sys.exit(f"origin: {args.root} is not a directory")
    try:
        asyncio.run(_main(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
