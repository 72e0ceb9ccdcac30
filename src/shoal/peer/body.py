"""Reading an HTTP body piece by piece without copying it.

aiohttp's ``readexactly(4 MiB)`` joins the buffered chunks into one fresh 4 MiB bytes object per piece, an
allocation and a copy of every byte that cost as much as the rest of the transfer (benchmarks/single_peer.py;
figures in benchmarks/RESULTS.md). A piece is instead
kept as the list of buffers aiohttp received (sliced with memoryviews at piece boundaries), hashed buffer by
buffer, and written with one ``pwritev``.
"""

from __future__ import annotations

import asyncio

from aiohttp import StreamReader

Buffers = list[bytes | memoryview]


class PieceReader:
    def __init__(self, stream: StreamReader) -> None:
        self._stream = stream
        self._left: memoryview | None = None

    async def read(self, size: int) -> Buffers:
        """The next ``size`` bytes of the body as buffers; IncompleteReadError if the body ends first."""
        buffers: Buffers = []
        got = 0
        while got < size:
            if self._left is not None:
                chunk: bytes | memoryview = self._left
                self._left = None
            else:
                chunk, _ = await self._stream.readchunk()
                if not chunk:
                    raise asyncio.IncompleteReadError(b"", size)
            if got + len(chunk) > size:
                view = memoryview(chunk)
                self._left = view[size - got :]
                chunk = view[: size - got]
            buffers.append(chunk)
            got += len(chunk)
        return buffers
