"""Long responses: a folder as a tar archive with bounded memory, and server-sent event streams
bounded per API key."""

from __future__ import annotations

import queue
import tarfile
import threading
from collections import Counter
from pathlib import Path
from typing import Callable, Iterator

from sse_starlette import EventSourceResponse

from lmtune.errors import RequestError

CHUNK = 1 << 20
QUEUED_CHUNKS = 8  # at most ~8 MiB in flight per download
STREAM_RETRY_AFTER_SECONDS = 30


class _Disconnected(Exception):
    pass


def tar_stream(folder: Path, relative_paths: list[str], prefix: str) -> Iterator[bytes]:
    """tarfile writes in a thread into a bounded queue; the response reads from it. A client that
    goes away stops the writer at its next chunk."""
    chunks: queue.Queue = queue.Queue(maxsize=QUEUED_CHUNKS)
    gone = threading.Event()

    class Sink:
        def write(self, data: bytes) -> int:
            while True:
                if gone.is_set():
                    raise _Disconnected
                try:
                    chunks.put(bytes(data), timeout=1)
                    return len(data)
                except queue.Full:
                    continue

    def produce() -> None:
        try:
            with tarfile.open(fileobj=Sink(), mode="w|", bufsize=CHUNK) as tar:
                for relative in relative_paths:
                    tar.add(folder / relative, arcname=f"{prefix}/{relative}", recursive=False)
            chunks.put(None)
        except _Disconnected:
            pass
        except Exception as error:  # surfaced to the response, which then ends abruptly
            chunks.put(error)

    threading.Thread(target=produce, daemon=True, name="tar-stream").start()
    try:
        while (chunk := chunks.get()) is not None:
            if isinstance(chunk, Exception):
                raise chunk
            yield chunk
    finally:
        gone.set()


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
                raise RequestError(429, f"this API key already has {self._open[owner]} event streams open, the most allowed "
                                   "at once; close one, or poll GET /v1/fine_tuning/jobs/{id}/events instead",
                                   code="too_many_streams", retry_after=STREAM_RETRY_AFTER_SECONDS)  # fmt: skip
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
