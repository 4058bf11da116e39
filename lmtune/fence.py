"""Fencing the trainer: only the attempt that owns a run folder writes to it.

The worker claims the folder for its attempt (`claim_run_folder`) before it starts a trainer and
tells the trainer that attempt in LMTUNE_ATTEMPT. The trainer checks (`RunFence.check`) at every
step and right before it writes metrics, a checkpoint or the final model; once a newer attempt has
claimed the folder it raises Superseded and writes nothing more. The claim is a small file in the
run folder, replaced atomically, so it holds across machines sharing the data folder. A trainer
started by hand (no LMTUNE_ATTEMPT) is not fenced.

A job that ends, or goes back to the queue, without its worker (the sweep found its lease lapsed)
has its folder closed (`close_run_folder`): no attempt owns it, and an orphan trainer still running
stops at its next write. The error report (error.json) names its attempt, and the worker reads only
the report of the attempt it ran (`read_error_report`): a superseded trainer's late report is never
taken for the current attempt's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from lmtune.layout import RunLayout, write_atomically

ATTEMPT_ENV = "LMTUNE_ATTEMPT"
NO_ATTEMPT = 0  # attempts count from 1: a closed folder is owned by none


class Superseded(Exception):
    """A newer attempt owns the run folder: stop without writing."""


def claim_run_folder(layout: RunLayout, attempt: int) -> None:
    layout.root.mkdir(parents=True, exist_ok=True)
    write_atomically(layout.fence, str(attempt))


def close_run_folder(layout: RunLayout) -> None:
    """No attempt owns the folder any more; a trainer still writing there stops at its next write."""
    if layout.root.is_dir():
        write_atomically(layout.fence, str(NO_ATTEMPT))


def folder_owner(layout: RunLayout) -> int | None:
    try:
        return int(layout.fence.read_text())
    except FileNotFoundError:
        return None


@dataclass(frozen=True)
class RunFence:
    layout: RunLayout
    attempt: int | None  # None: not fenced

    @classmethod
    def from_env(cls, layout: RunLayout) -> RunFence:
        value = os.environ.get(ATTEMPT_ENV)
        return cls(layout, int(value) if value else None)

    def check(self) -> None:
        if self.attempt is None:
            return
        owner = folder_owner(self.layout)
        if owner == NO_ATTEMPT:
            raise Superseded(
                f"no attempt owns {self.layout.root} any more (its job ended or waits for a new attempt); "
                f"attempt {self.attempt} stops"
            )
        if owner != self.attempt:
            raise Superseded(f"attempt {owner} owns {self.layout.root}; attempt {self.attempt} stops")

    def write(self, path: Path, content: str | bytes | Callable[[BinaryIO], object]) -> None:
        """`content` into `path` only while this attempt owns the folder, whole or not at all: written
        aside, the fence checked again, then renamed into place (layout.write_atomically)."""
        self.check()
        write_atomically(path, content, before=self.check)


def check_writer_of(path: Path) -> None:
    """Before a trainer writes `path`, a file of its run folder: its attempt (from the environment)
    still owns the folder, else Superseded. Nothing to check in a process that is not a fenced trainer."""
    RunFence.from_env(RunLayout(path.parent)).check()


def write_error_report(fence: RunFence, code: str, message: str, param: str | None = None) -> None:
    """error.json, for the worker: why this attempt failed, with the field to change."""
    report = {"attempt": fence.attempt, "code": code, "message": message, "param": param}
    fence.write(fence.layout.error, json.dumps(report))


def read_error_report(layout: RunLayout, attempt: int) -> dict | None:
    """The error report of `attempt`: None if there is none, it is unreadable (cut short) or it is
    another attempt's."""
    try:
        report = json.loads(layout.error.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return report if isinstance(report, dict) and report.get("attempt") == attempt else None
