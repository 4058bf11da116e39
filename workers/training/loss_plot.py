"""The loss-curve picture."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

from lmtune.fence import check_writer_of
from lmtune.layout import write_atomically

matplotlib.use("Agg")  # no display on servers
import matplotlib.pyplot as plt  # noqa: E402


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
    try:
        write_atomically(
            path, lambda handle: figure.savefig(handle, format="png"), before=lambda: check_writer_of(path)
        )
    finally:
        plt.close(figure)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
