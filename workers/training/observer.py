"""Hooks through which the CLI's progress bar, the experiment trackers and the worker follow a run."""

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


class Observers(Observer):
    """Several observers, told in turn."""

    def __init__(self, *observers: Observer):
        self.observers = observers

    def on_start(self, total_steps: int, start_step: int) -> None:
        for observer in self.observers:
            observer.on_start(total_steps, start_step)

    def on_step(self, metrics: dict) -> None:
        for observer in self.observers:
            observer.on_step(metrics)

    def on_checkpoint(self, step: int, folder: Path) -> None:
        for observer in self.observers:
            observer.on_checkpoint(step, folder)
