"""Long responses: a file, and a folder as a tar archive, each held open from before the headers and
sent with bounded memory; and server-sent event streams bounded per API key.

The archive is written directly rather than through `tarfile`: each member is its header
(`TarInfo.tobuf`, PAX for long names) and then the file read in large blocks into the response,
so the response gets few, big chunks (one thread hop each under Starlette) and nothing is copied
twice. A client that goes away stops the generator at its next chunk.

A download opens its files before its headers are sent: a checkpoint pruned, a job deleted or a
file replaced while it is being sent goes on being sent as it was when the download started (the
open file outlives its name), so a response never breaks after its status line."""

from __future__ import annotations

import os
import tarfile
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from fastapi.responses import FileResponse
from sse_starlette import EventSourceResponse
from starlette.datastructures import Headers
from starlette.responses import MalformedRangeHeader, RangeNotSatisfiable

from lmtune.errors import RequestError
from lmtune.problems import quote
from service.errors import error_response

CHUNK = 4 << 20
BLOCK = tarfile.BLOCKSIZE
RECORD = tarfile.RECORDSIZE  # tar readers expect the archive padded to whole records
STREAM_RETRY_AFTER_SECONDS = 30


class HeldFileResponse(FileResponse):
    """Starlette's FileResponse (HTTP Range included) on a file opened when the response is made,
    before its headers, and read in large blocks (Starlette reads 64 KiB per thread hop)."""

    chunk_size = CHUNK

    def __init__(self, path: Path, **options):
        self._held = path.open("rb")  # FileNotFoundError here, before any header: the caller's 404
        super().__init__(path, stat_result=os.fstat(self._held.fileno()), **options)

    async def __call__(self, scope, receive, send) -> None:
        """Starlette's answer, but a Range it cannot parse is ignored (the whole file, 200, as RFC 9110
        lets a server do) and one past the end is refused in the API's JSON error shape."""
        asked = Headers(scope=scope).get("range")
        try:
            if asked is not None and scope["method"] in ("GET", "HEAD"):
                size = self.stat_result.st_size
                try:
                    self._parse_range_header(asked, size)
                except MalformedRangeHeader:
                    scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k.lower() != b"range"]}
                except RangeNotSatisfiable:
                    refused = error_response(
                        416,
                        f"the range {quote(asked)} is outside the file, which has {size:,} bytes",
                        code="range_not_satisfiable",
                        headers={"Content-Range": f"bytes */{size}"},
                    )
                    return await refused(scope, receive, send)
            await super().__call__(scope, receive, send)
        finally:  # a HEAD request or a refused range never opens the body, which closes it
            self._held.close()

    @asynccontextmanager
    async def _open_file(self) -> AsyncIterator[anyio.AsyncFile[bytes]]:
        # Starlette opens self.path here, after the headers went out; the held file is used instead
        file = anyio.wrap_file(self._held)
        try:
            yield file
        finally:
            with anyio.CancelScope(shield=True):
                await file.aclose()


class TarArchive:
    """A folder's files as a tar stream whose length is known before the first byte (the headers
    are made up front), so the response carries Content-Length and clients can show progress.
    Every member is opened up front too (FileNotFoundError then, before any header)."""

    def __init__(self, folder: Path, relative_paths: list[str], prefix: str):
        self.members = []
        for relative in relative_paths:
            source = (folder / relative).open("rb")
            stat = os.fstat(source.fileno())
            info = tarfile.TarInfo(f"{prefix}/{relative}")
            info.size, info.mtime, info.mode = stat.st_size, int(stat.st_mtime), 0o644
            self.members.append((source, info.tobuf(format=tarfile.PAX_FORMAT), info.size))
        written = sum(len(header) + size + -size % BLOCK for _, header, size in self.members)
        end = 2 * BLOCK
        self.trailer = end + -(written + end) % RECORD
        self.size = written + self.trailer

    def __iter__(self) -> Iterator[bytes]:
        try:
            for source, header, size in self.members:
                yield header
                left = size
                while left:
                    chunk = source.read(min(CHUNK, left))
                    if not chunk:  # the file shrank while being sent: the archive cannot be completed
                        raise OSError(f"{source.name} changed while it was being sent")
                    left -= len(chunk)
                    yield chunk
                source.close()
                if size % BLOCK:
                    yield bytes(-size % BLOCK)
            yield bytes(self.trailer)
        finally:
            for source, _, _ in self.members:
                source.close()


class StreamSlots:
    """Event streams open per API key in this process; one over the limit is refused with 429."""

    def __init__(self, per_key: int):
        self.per_key = per_key
        self._open: Counter[str] = Counter()
        self._lock = threading.Lock()

    def take(self, owner: str) -> Callable[[], None]:
        """A slot for one stream of `owner`; call the returned function when the stream ends."""
        with self._lock:
            if self._open[owner] >= self.per_key:
                raise RequestError(
                    429,
                    f"this API key already has {self._open[owner]} event streams open, the most allowed "
                    "at once; close one, or poll GET /v1/fine_tuning/jobs/{id}/events instead",
                    code="too_many_streams",
                    retry_after=STREAM_RETRY_AFTER_SECONDS,
                )
            self._open[owner] += 1
        return lambda: self._give_back(owner)

    def _give_back(self, owner: str) -> None:
        with self._lock:
            self._open[owner] -= 1
            if not self._open[owner]:
                del self._open[owner]


class EventStream(EventSourceResponse):
    """sse-starlette's response (keep-alive comments, disconnect handling) that calls `on_close` when
    it ends, however it ends: finished, client gone, or server stopping."""

    def __init__(self, content, *, on_close: Callable[[], None], keepalive_seconds: float):
        super().__init__(content, ping=keepalive_seconds, sep="\n", headers={"Cache-Control": "no-cache"})
        self._on_close = on_close

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()
