"""``/files/REL``: a published file as an HTTP origin and BEP 19 web seed (GET and HEAD, one Range).

aiohttp's FileResponse derives its ETag from mtime and size and compares If-Range only as a date; a seeded
file's validator is its content, so this response sets ``ETag: "<BLAKE3>"`` itself and honours If-Range
with that ETag (RFC 9110 13.1.5: a mismatch gets the whole current file, never a range of it). The body
still goes out with sendfile.

Before a byte is sent the open file is checked against what was hashed (inode, size, mtime): a file
changed since it was published is being re-hashed, and gets a 503 with Retry-After rather than bytes that
do not match its ETag. A reader that takes a chunk of the file slower than the floor rate loses its
connection (shoal.http.limits, ``send_file``).
"""

from __future__ import annotations

import asyncio
import os
from email.utils import formatdate

from aiohttp import hdrs, web

from shoal.http.limits import CHUNK_BYTES, process_limits, send_file
from shoal.seeder.catalog import SeededFile
from shoal.storage.file_hashes import FileStat

_RETRY = {"Retry-After": "2"}


def _range(request: web.Request, size: int) -> tuple[int, int] | None:
    """[start, end) of the one range asked for; None for the whole file. ValueError: unsatisfiable."""
    if hdrs.RANGE not in request.headers:
        return None
    try:
        rng = request.http_range  # a single bytes range; aiohttp refuses multi-range sets
    except ValueError:
        return None  # malformed or multi-range: RFC 9110 14.2 lets a server ignore it and send 200
    start, stop = rng.start, rng.stop
    if start is None:
        return None
    if start < 0:  # suffix range: the last -start bytes
        start = max(0, size + start)
        stop = size
    stop = size if stop is None else min(stop, size)
    if start >= size or stop <= start:
        raise ValueError("unsatisfiable")
    return start, stop


async def file_response(request: web.Request, entry: SeededFile) -> web.StreamResponse:
    try:
        fobj = await asyncio.to_thread(open, entry.path, "rb")
    except OSError:
        raise web.HTTPNotFound(reason="file is gone") from None
    try:
        if FileStat.of(os.fstat(fobj.fileno())) != entry.stat:
            raise web.HTTPServiceUnavailable(reason="the file changed; it is being hashed again", headers=_RETRY)
        size = entry.stat.size
        headers = {
            hdrs.ETAG: entry.etag,
            hdrs.LAST_MODIFIED: formatdate(entry.stat.mtime_ns / 1e9, usegmt=True),
            hdrs.ACCEPT_RANGES: "bytes",
            hdrs.CONTENT_TYPE: "application/octet-stream",
            "Shoal-Task": entry.task_id,
        }
        if_range = request.headers.get(hdrs.IF_RANGE)
        try:
            span = _range(request, size) if if_range in (None, entry.etag) else None
        except ValueError:
            unsatisfiable = {hdrs.CONTENT_RANGE: f"bytes */{size}", **headers}
            raise web.HTTPRequestRangeNotSatisfiable(headers=unsatisfiable) from None
        start, stop = span if span is not None else (0, size)
        response = web.StreamResponse(status=206 if span is not None else 200, headers=headers)
        if span is not None:
            response.headers[hdrs.CONTENT_RANGE] = f"bytes {start}-{stop - 1}/{size}"
        response.content_length = stop - start
        await response.prepare(request)
        if request.method != hdrs.METH_HEAD and stop > start:
            transport = request.transport
            if transport is None:
                raise ConnectionResetError("connection lost")
            await send_file(transport, fobj, start, stop - start, CHUNK_BYTES, process_limits())
        await response.write_eof()
        return response
    finally:
        fobj.close()
