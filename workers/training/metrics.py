"""The per-step metrics file and the loss-curve picture."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers
import matplotlib.pyplot as plt  # noqa: E402


class MetricsLog:
    """OUTPUT/metrics.jsonl: one JSON object per optimizer step, appended as training goes."""

    def __init__(self, path: Path):
        self.path = path

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        with self.path.open() as handle:
            return [json.loads(line) for line in handle if line.strip()]

    def truncate_after(self, step: int) -> None:
        """Drop rows after `step`: a resumed run writes them again."""
        kept = [row for row in self.read() if row["step"] <= step]
        self.path.write_text("".join(json.dumps(row) + "\n" for row in kept))

    def append(self, row: dict) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
            handle.flush()


def plot_loss(rows: list[dict], path: Path) -> None:
    figure, axes = plt.subplots(figsize=(8, 4.5), dpi=100)
    for key, label, style in (
        ("train_loss", "train", "-"),
        ("valid_loss", "validation (sample)", "o-"),
        ("full_valid_loss", "validation (full, epoch end)", "s--"),
    ):
        points = [(row["step"], row[key]) for row in rows if _finite(row.get(key))]
        if points:
            steps, values = zip(*points)
            axes.plot(steps, values, style, label=label, markersize=4)
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.set_title("lmtune: loss")
    axes.grid(alpha=0.3)
    if axes.lines:
        axes.legend()
    figure.tight_layout()
    partial = path.with_suffix(".tmp.png")
    figure.savefig(partial)
    plt.close(figure)
    partial.replace(path)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
