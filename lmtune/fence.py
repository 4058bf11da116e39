"""Fencing the trainer: only the attempt that owns a run folder writes to it.

The worker claims the folder for its attempt (`claim_run_folder`) before it starts a trainer and
tells the trainer that attempt in LMTUNE_ATTEMPT. The trainer checks (`RunFence.check`) at every
step and right before it writes metrics, a checkpoint or the final model; once a newer attempt has
claimed the folder it raises Superseded and writes nothing more. The claim is a small file in the
run folder, replaced atomically, so it holds across machines sharing the data folder. A trainer
started by hand (no LMTUNE_ATTEMPT) is not fenced.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from lmtune.layout import RunLayout

ATTEMPT_ENV = "LMTUNE_ATTEMPT"


class Superseded(Exception):
    """A newer attempt owns the run folder: stop without writing."""


def claim_run_folder(layout: RunLayout, attempt: int) -> None:
    layout.root.mkdir(parents=True, exist_ok=True)
    partial = layout.fence.with_name(f".{layout.fence.name}.{os.getpid()}")
    partial.write_text(str(attempt))
    os.replace(partial, layout.fence)


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
        if owner != self.attempt:
            raise Superseded(f"attempt {owner} owns {self.layout.root}; attempt {self.attempt} stops")
