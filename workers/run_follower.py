"""Reading a trainer's metrics while they are written."""

from __future__ import annotations

import json
import os

from lmtune.layout import RunLayout


class RunFollower:
    def __init__(self, layout: RunLayout):
        self.layout = layout
        self.rows_by_step: dict[int, dict] = {}
        self._inode: int | None = None
        self._offset = 0
        self._partial = b""

    def new_metrics(self) -> list[dict]:
        """Rows appended since the last call. A resumed trainer replaces the file: start over (the
        store skips steps it already has)."""
        try:
            handle = self.layout.metrics.open("rb")
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
        rows = [json.loads(line) for line in lines if line.strip()]
        self.rows_by_step.update((row["step"], row) for row in rows)
        return rows
