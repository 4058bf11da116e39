"""Hooks through which the CLI's progress bar and the worker follow a run as it goes."""

from __future__ import annotations

from pathlib import Path


class Observer:
    """Does nothing; subclasses override what they need. Every process calls these hooks; a subclass
    that writes or prints checks that it is on the main process."""

    def on_start(self, total_steps: int, start_step: int) -> None:
        pass

    def on_step(self, metrics: dict) -> None:
        pass

    def on_checkpoint(self, step: int, folder: Path) -> None:
        pass
