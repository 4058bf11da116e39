"""Small readers the tests share."""

from pathlib import Path

from lmtune.layout import RunLayout
from lmtune.metrics_log import MetricsLog


def metric_rows(output: Path) -> list[dict]:
    return MetricsLog(RunLayout(Path(output)).metrics).read()


def train_losses(output: Path) -> list[float]:
    return [row["train_loss"] for row in metric_rows(output)]
