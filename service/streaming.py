"""A folder streamed as a tar archive with bounded memory, whatever the size of its files."""

from __future__ import annotations

import queue
import tarfile
import threading
from pathlib import Path
from typing import Iterator

CHUNK = 1 << 20
QUEUED_CHUNKS = 8  # at most ~8 MiB in flight per download


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
