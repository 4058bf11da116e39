"""Long responses: a folder as a tar archive with bounded memory, and server-sent event streams
bounded per API key.

The archive is written directly rather than through `tarfile`: each member is its header
(`TarInfo.tobuf`, PAX for long names) and then the file read in large blocks into the response,
so the response gets few, big chunks (one thread hop each under Starlette) and nothing is copied
twice. A client that goes away stops the generator at its next chunk."""

from __future__ import annotations

import tarfile
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

from sse_starlette import EventSourceResponse

from lmtune.errors import RequestError

CHUNK = 4 << 20
BLOCK = tarfile.BLOCKSIZE
RECORD = tarfile.RECORDSIZE  # tar readers expect the archive padded to whole records
STREAM_RETRY_AFTER_SECONDS = 30


class TarArchive:
    """A folder's files as a tar stream whose length is known before the first byte (the headers
    are made up front), so the response carries Content-Length and clients can show progress."""

    def __init__(self, folder: Path, relative_paths: list[str], prefix: str):
        self.members = []
        for relative in relative_paths:
            path = folder / relative
            stat = path.stat()
            info = tarfile.TarInfo(f"{prefix}/{relative}")
            info.size, info.mtime, info.mode = stat.st_size, int(stat.st_mtime), 0o644
            self.members.append((path, info.tobuf(format=tarfile.PAX_FORMAT), info.size))
        written = sum(len(header) + size + -size % BLOCK for _, header, size in self.members)
        end = 2 * BLOCK
        self.trailer = end + -(written + end) % RECORD
        self.size = written + self.trailer

    def __iter__(self) -> Iterator[bytes]:
        for path, header, size in self.members:
            yield header
            with path.open("rb") as source:
                left = size
                while left:
                    chunk = source.read(min(CHUNK, left))
                    if not chunk:  # the file shrank while being sent: the archive cannot be completed
                        raise OSError(f"{path} changed while it was being sent")
                    left -= len(chunk)
                    yield chunk
            if size % BLOCK:
                yield bytes(-size % BLOCK)
        yield bytes(self.trailer)


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
