"""Small readers and parameters the tests share."""

from pathlib import Path

import pytest

from lmtune.layout import RunLayout
from lmtune.metrics_log import MetricsLog


def metric_rows(output: Path) -> list[dict]:
    return MetricsLog(RunLayout(Path(output)).metrics).read()


def train_losses(output: Path) -> list[float]:
    return [row["train_loss"] for row in metric_rows(output)]


# For the `database_url` fixture: SQLite runs in the fast tier; PostgreSQL needs its server.
POSTGRESQL = pytest.param("postgresql", marks=pytest.mark.integration, id="postgresql")
BOTH_DATABASES = ["sqlite", POSTGRESQL]
