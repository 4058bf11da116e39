"""Hooks through which the CLI's progress bar and the worker follow a run as it goes."""

from __future__ import annotations

from pathlib import Path


class Observer:
    """Does nothing; subclasses override what they need. Called on the main process only for files,
    on every process for these hooks (a subclass checks the rank if it matters)."""

    def on_start(self, total_steps: int, start_step: int) -> None:
        pass

    def on_step(self, metrics: dict) -> None:
        pass

    def on_checkpoint(self, step: int, folder: Path) -> None:
        pass
