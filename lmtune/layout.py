"""Where a training run keeps its files. Shared by the trainer, the worker and the API."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunLayout:
    root: Path

    @property
    def spec(self) -> Path:
        return self.root / "spec.json"  # the job as given; a resume must match it

    @property
    def run(self) -> Path:
        return self.root / "run.json"  # resolved hyperparameters and dataset counts

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def loss_plot(self) -> Path:
        return self.root / "loss.png"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def final(self) -> Path:
        return self.root / "final"

    @property
    def result(self) -> Path:
        return self.root / "result.json"  # written last: its presence means the run finished
