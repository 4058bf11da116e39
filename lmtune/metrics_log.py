"""OUTPUT/metrics.jsonl, read and written by the trainer, the worker and the API."""

from __future__ import annotations

import json
import os
from pathlib import Path


class MetricsLog:
    """OUTPUT/metrics.jsonl: one JSON object per optimizer step, appended as training goes."""

    def __init__(self, path: Path):
        self.path = path

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        lines = self.path.read_text().split("\n")
        lines.pop()  # after the last newline: empty, or a row cut short by a kill, never a whole row
        return [json.loads(line) for line in lines if line.strip()]

    def truncate_after(self, step: int) -> None:
        """Drop rows after `step`: a resumed run writes them again. The file is replaced whole (a new
        inode), so a reader following it by offset sees that it must start over."""
        kept = [row for row in self.read() if row["step"] <= step]
        partial = self.path.with_suffix(".jsonl.partial")
        partial.write_text("".join(json.dumps(row) + "\n" for row in kept))
        os.replace(partial, self.path)

    def append(self, row: dict) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
            handle.flush()
