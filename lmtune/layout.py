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
    def error(self) -> Path:
        return self.root / "error.json"  # why a failed run failed: {code, message}

    @property
    def result(self) -> Path:
        return self.root / "result.json"  # written last: its presence means the run finished


@dataclass(frozen=True)
class DataLayout:
    """The data folder (LMTUNE_DATA_DIR). One folder, mounted at the same path on every machine of
    a deployment (API and workers), holds:

        files/<file-id>.jsonl       uploaded files, stored under server-made names
        jobs/<job-id>/              a job's run folder (RunLayout): metrics, checkpoints, final/
        jobs/<job-id>/job.json      the spec the worker hands the trainer (paths resolved)
        jobs/<job-id>/trainer.log   the trainer's output
        models/<name>/              built-in catalogue models, made on first use
        lmtune.db, broker.sqlite    SQLite store and embedded broker, when no DATABASE_URL/REDIS_URL
    """

    root: Path

    @property
    def files(self) -> Path:
        return self.root / "files"

    def file(self, file_id: str) -> Path:
        return self.files / f"{file_id}.jsonl"

    def job(self, job_id: str) -> RunLayout:
        return RunLayout(self.root / "jobs" / job_id)

    def trainer_spec(self, job_id: str) -> Path:
        return self.root / "jobs" / job_id / "job.json"

    def trainer_log(self, job_id: str) -> Path:
        return self.root / "jobs" / job_id / "trainer.log"

    def builtin_model(self, name: str) -> Path:
        return self.root / "models" / name

    def relative(self, path: Path) -> str:
        return str(path.relative_to(self.root))

    def resolve(self, relative: str) -> Path:
        """A stored relative path, confined to the data folder."""
        path = (self.root / relative).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"{relative!r} leaves the data folder")
        return path
