"""Small readers and parameters the tests share."""

import functools
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lmtune.layout import RunLayout
from lmtune.metrics_log import MetricsLog


def metric_rows(output: Path) -> list[dict]:
    return MetricsLog(RunLayout(Path(output)).metrics).read()


def train_losses(output: Path) -> list[float]:
    return [row["train_loss"] for row in metric_rows(output)]


def migrated_sqlite(path: Path) -> str:
    """The URL of a new SQLite database at `path`, already at the newest migration: a copy of one
    migrated once per process, since running every migration again cost each test a tenth of a second."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_migrated_sqlite_file())
    return f"sqlite:///{path}"


@functools.cache
def _migrated_sqlite_file() -> bytes:
    from lmtune.store.database import open_database

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "lmtune.db"
        open_database(f"sqlite:///{path}").engine.dispose()  # the last connection closed: no -wal file left
        return path.read_bytes()


# For the `database_url` fixture: SQLite runs in the fast tier; PostgreSQL needs its server.
POSTGRESQL = pytest.param("postgresql", marks=pytest.mark.integration, id="postgresql")
BOTH_DATABASES = ["sqlite", POSTGRESQL]
# testing criteria that compare the answer with an item's `answer`
EXACT = {
    "type": "string_check",
    "name": "exact",
    "input": "{{sample.output_text}}",
    "reference": "{{item.answer}}",
    "operation": "eq",
}
FUZZY = {
    "type": "text_similarity",
    "name": "fuzzy",
    "input": "{{sample.output_text}}",
    "reference": "{{item.answer}}",
    "evaluation_metric": "fuzzy_match",
    "pass_threshold": 0.5,
}


def add_event(db, job_id: str, message: str, **fields):
    """An event written as the worker writes one (outside any attempt's report)."""
    from lmtune.store.jobs import new_event

    event = new_event(job_id, message, **fields)
    with db.session() as session:
        session.add(event)
    return event


def record_step(db, job_id: str, attempt: int, metrics: dict, checkpoint: tuple[int, str, dict | None] | None = None):
    """One poll of a worker that saw the trainer finish a step (and maybe publish a checkpoint)."""
    from lmtune.store.history import Report, record_report
    from lmtune.store.jobs import new_event

    step = metrics["step"]
    report = Report(
        metric_events=[
            new_event(
                job_id,
                f"Step {step}/{metrics['total_steps']}: training loss={metrics['train_loss']:.4f}",
                type="metrics",
                data=metrics,
                step=step,
            )
        ],
        progress={
            "step": step,
            "total_steps": metrics["total_steps"],
            "trained_tokens": metrics.get("tokens"),
            "latest_metrics": metrics,
        },
    )
    if checkpoint:
        report.checkpoints = {checkpoint[0]: checkpoint[1:]}
    return record_report(db, job_id, attempt, report)


@contextmanager
def small_disk(folder: Path, size: str = "1m"):
    """`folder` on a tmpfs of `size`: a disk that fills up for real (ENOSPC). Mounting needs root
    (or CAP_SYS_ADMIN); elsewhere the test is skipped, saying why."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"a small disk needs a tmpfs mount, refused here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "--lazy", str(folder)], check=True)


def train_in_processes(folder: Path, spec_file: str, processes: int) -> Path:
    """`lmtune train` of `spec_file` in `folder` with `processes` processes (the project's launcher);
    the run folder it wrote."""
    output = f"run{processes}"
    command = [sys.executable, "-m", "cli", "train", spec_file, "--output", output, "--num-processes", str(processes)]
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return folder / output


@dataclass
class MemoryQueue:
    """The JobQueue seam in memory (lmtune.dispatch): route and worker tests see what was sent, with no broker."""

    sent: list[str] = field(default_factory=list)

    def send(self, job) -> None:
        self.sent.append(job.id)
