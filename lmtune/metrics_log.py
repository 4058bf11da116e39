"""OUTPUT/metrics.jsonl, read and written by the trainer, the worker and the API."""

from __future__ import annotations

import json
import re
from pathlib import Path

from lmtune.fence import check_writer_of
from lmtune.layout import write_atomically

STEP_FIRST = re.compile(rb'\{"step": (\d+)[,}]')  # how append() writes a row: its step first


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

    def page(self, after_step: int, limit: int) -> tuple[list[dict], bool]:
        """Up to `limit` rows past `after_step`, oldest first, and whether more follow. The file is
        read a line at a time and only the page's rows are parsed, so a long log costs a page."""
        rows: dict[int, dict] = {}
        if not self.path.exists():
            return [], False
        with self.path.open("rb") as handle:
            for line in handle:
                if not line.endswith(b"\n"):
                    break  # a row still being written
                if not line.strip():
                    continue
                first = STEP_FIRST.match(line)
                step = int(first.group(1)) if first else json.loads(line)["step"]
                if step <= after_step:
                    continue
                if step not in rows and len(rows) == limit:
                    return [rows[s] for s in sorted(rows)], True
                rows[step] = json.loads(line)  # a step written again (a resumed run) replaces the first
        return [rows[s] for s in sorted(rows)], False

    def truncate_after(self, step: int) -> None:
        """Drop rows after `step`: a resumed run writes them again. The file is replaced whole (a new
        inode), so a reader following it by offset sees that it must start over."""
        kept = [row for row in self.read() if row["step"] <= step]
        write_atomically(self.path, "".join(json.dumps(row) + "\n" for row in kept))

    def append(self, row: dict) -> None:
        check_writer_of(self.path)  # metrics, sample sets, notices: only while the trainer's attempt owns the folder
        with self.path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
            handle.flush()
