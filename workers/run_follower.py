"""Reading a trainer's run folder while it is written: new metric rows, sample sets and notices."""

from __future__ import annotations

import json
import os
from pathlib import Path

from lmtune.layout import RunLayout

SAMPLE_PREVIEW_CHARS = 80


class JsonlTail:
    """The rows appended to a JSONL file since the last read. A resumed trainer replaces the file
    (a new inode): reading starts over, and the reader skips the steps it already has."""

    def __init__(self, path: Path):
        self.path = path
        self._inode: int | None = None
        self._offset = 0
        self._partial = b""

    def new_rows(self) -> list[dict]:
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            return []
        with handle:
            inode = os.fstat(handle.fileno()).st_ino
            if inode != self._inode:
                self._inode, self._offset, self._partial = inode, 0, b""
            handle.seek(self._offset)
            chunk = handle.read()
        self._offset += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()  # an unfinished last line waits for its newline
        return [json.loads(line) for line in lines if line.strip()]


class RunFollower:
    def __init__(self, layout: RunLayout):
        self.layout = layout
        self.rows_by_step: dict[int, dict] = {}
        self._metrics, self._samples, self._notices = (
            JsonlTail(layout.metrics),
            JsonlTail(layout.samples),
            JsonlTail(layout.notices),
        )

    def new_metrics(self) -> list[dict]:
        rows = self._metrics.new_rows()
        self.rows_by_step.update((row["step"], row) for row in rows)
        return rows

    def new_messages(self) -> list[dict]:
        """Each new trainer notice and sample set, as the keyword arguments of a job event. A sample
        set's event carries its step, so the store records it once however often a resumed run or
        a new attempt reads the file again."""
        messages = [
            {"message": row["message"], "data": row.get("data"), "level": row.get("level", "info")}
            for row in self._notices.new_rows()
        ]
        for row in self._samples.new_rows():
            first = row["samples"][0]["completion"] if row["samples"] else ""
            preview = first if len(first) <= SAMPLE_PREVIEW_CHARS else first[:SAMPLE_PREVIEW_CHARS] + "…"
            messages.append(
                {
                    "message": f"Samples at step {row['step']}: {len(row['samples'])} answers in "
                    f"{row['generation_seconds']:.1f} s; the first: {preview!r}",
                    "data": {"samples_step": row["step"], "generation_seconds": row["generation_seconds"]},
                    "step": row["step"],
                }
            )
        return messages
