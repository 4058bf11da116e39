"""A hub model's files downloaded into the Hugging Face cache once, with its progress recorded for the
API (lmtune.model_availability.download_progress): the first process that needs the model takes the
lock beside the record and downloads; any other waits on the lock, then finds the files there."""

from __future__ import annotations

import fcntl
import json
import os
import threading
from pathlib import Path

from lmtune.model_availability import download_record, is_ready
from lmtune.model_refs import ModelRef


def fetch(source: str) -> None:
    """The files of `source` (a hub id) in the cache; a folder, or a model already there, is left as it is."""
    if Path(source).is_absolute() or is_ready(ModelRef(source, source)):
        return
    from huggingface_hub import snapshot_download

    record = download_record(source)
    record.parent.mkdir(parents=True, exist_ok=True)
    with open(record.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process downloading it: wait for it to end
        if is_ready(ModelRef(source, source)):
            return
        progress = _Progress(record)
        try:
            # the hub HF_ENDPOINT names (a mirror), read now: huggingface_hub reads it once, at import
            snapshot_download(source, tqdm_class=progress.bars(), endpoint=os.environ.get("HF_ENDPOINT") or None)
        except Exception as error:
            progress.write("failed", error=f"{type(error).__name__}: {str(error)[:300]}")
            raise
        record.unlink(missing_ok=True)  # the files are the record now


class _Progress:
    def __init__(self, record: Path):
        self.record, self.done, self.total = record, 0, 0
        self.lock = threading.Lock()  # the files download in several threads
        self.write("downloading")

    def write(self, status: str, error: str | None = None) -> None:
        body = {"status": status, "bytes_done": self.done, "bytes_total": self.total, "error": error}
        partial = self.record.with_name(f".{self.record.name}.{os.getpid()}")
        partial.write_text(json.dumps(body))
        os.replace(partial, self.record)  # a reader sees the last record whole

    def add(self, bytes_done: int, bytes_total: int) -> None:
        """Written at each report: one per file started and per block written (10 MB over HTTP)."""
        with self.lock:
            self.done += bytes_done
            self.total = max(bytes_total, self.done, self.total)
            self.write("downloading")

    def bars(self):
        """A progress-bar class for snapshot_download that counts the bytes written to the cache (its
        bar named `huggingface_hub.snapshot_download`; the others count files or network bytes)."""
        from huggingface_hub.utils import tqdm

        progress = self

        class Counted(tqdm):
            def __init__(self, *args, name: str | None = None, **kwargs):
                self.counted = name == "huggingface_hub.snapshot_download"
                super().__init__(*args, name=name, **kwargs)

            def update(self, n=1):
                if self.counted:
                    progress.add(int(n or 0), int(self.total or 0))
                return super().update(n)

            def refresh(self, *args, **kwargs):  # called when a file starts and adds its size to the total
                if self.counted:
                    progress.add(0, int(self.total or 0))
                return super().refresh(*args, **kwargs)

        return Counted
