"""Recording how an attempt ended: one transaction writes the job's new status, its event and what
the run produced (the results file, the fine-tuned model). Tried again while the database is
unreachable, until another attempt holds the job. Only this attempt's error report counts
(lmtune.fence); a full disk is retried after a back-off, since freeing space is a fix outside the job."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field

from lmtune.backoff import pause_after
from lmtune.disk import DISK_FULL, disk_full_message
from lmtune.dispatch import JobQueue
from lmtune.fence import read_error_report
from lmtune.ids import new_id
from lmtune.layout import DataLayout, RunLayout, file_sha256
from lmtune.metrics_log import MetricsLog
from lmtune.settings import Settings
from lmtune.spec import JobSpec
from lmtune.store.database import Database, until_answered
from lmtune.store.fine_tuned import fine_tuned_model_id
from lmtune.store.jobs import JobStatus, Note, fail_attempt, finish_attempt, get_job, new_event
from lmtune.store.models import File, FineTunedModel, Job
from workers.supervision import Ending
from workers.training.errors import EXIT_DISK_FULL, EXIT_PAUSED

# OpenAI's columns, each from its metrics.jsonl key; an objective's other train_ and valid_ values
# (a preference method's rewards, say) follow as columns of their own names
RESULT_COLUMNS = {
    "step": "step",
    "train_loss": "train_loss",
    "train_accuracy": "train_mean_token_accuracy",
    "valid_loss": "valid_loss",
    "valid_mean_token_accuracy": "valid_mean_token_accuracy",
}
PARAM_OF_CODE = {
    "invalid_training_file": "training_file",
    "model_not_found": "model",
    "invalid_hyperparameters": "hyperparameters",
}


@dataclass
class Recorder:
    """Ends one attempt of one job in the store."""

    settings: Settings
    db: Database
    queue: JobQueue  # where a job queued again is sent
    job: Job
    attempt: int
    between: Callable[[], object]  # before each new try: raises StaleAttempt once the job is another's
    # waits up to the seconds given before a retry; False when interrupted (a cancel, the worker stopping)
    back_off: Callable[[float], bool] = field(default=lambda seconds: True)

    @property
    def data(self) -> DataLayout:
        return DataLayout(self.settings.data_dir)

    def _finish(self, status: JobStatus, note: Note, rows: tuple = (), **fields) -> Job:
        return until_answered(
            lambda: finish_attempt(self.db, self.job.id, self.attempt, status, note, rows=rows, **fields),
            f"ending attempt {self.attempt} of job {self.job.id}",
            between=self.between,
        )

    def outcome(self, ending: Ending) -> None:
        run = self.data.job(self.job.id)
        if ending.code == 0 and run.result.exists():
            self.succeed(run)
        elif ending.stop_reason == "cancel":
            self._finish(JobStatus.CANCELLED, Note("Fine-tuning job cancelled"))
        elif ending.stop_reason == "shutdown":
            job = self._finish(
                JobStatus.QUEUED,
                Note(
                    f"The worker is shutting down; the job is queued again and continues from step {self._step()}",
                    "warn",
                ),
            )
            self.queue.send(job)
        elif ending.code == EXIT_PAUSED or (ending.stop_reason == "pause" and ending.code != 0):
            self._finish(
                JobStatus.PAUSED, Note(f"Fine-tuning job paused at step {self._step()}; resume continues from there")
            )
        elif (error := read_error_report(run, self.attempt)) is not None:
            if error["code"] == DISK_FULL:
                self.retry_after_full_disk(error["message"])
            else:
                self.fail(error["code"], error["message"], error.get("param") or PARAM_OF_CODE.get(error["code"]))
        elif ending.code == EXIT_DISK_FULL:  # not even its report fitted
            self.retry_after_full_disk(disk_full_message("writing the trainer's error report", 1, run.root))
        else:
            log = self.data.relative(self.data.trainer_log(self.job.id))
            self.retry_or_fail(f"the trainer exited with status {ending.code} ({log} has its output)")

    def _step(self) -> int:
        return until_answered(lambda: get_job(self.db, self.job.id).step, "reading the step", between=self.between)

    def fail(self, code: str, message: str, param: str | None) -> None:
        self._finish(
            JobStatus.FAILED,
            Note(f"Fine-tuning job failed: {message}", "error"),
            error_code=code,
            error_message=message,
            error_param=param,
        )

    def retry_after_full_disk(self, message: str) -> None:
        """The attempt fails; the next one starts after a pause that doubles with each failure, so
        that space can be freed (a cancel during the pause ends the job)."""
        first = self.settings.disk_full_backoff_seconds
        pause = pause_after(self.job.failures + 1, first, most=first * 2**6)
        if not self.back_off(pause) and self._cancel_requested():
            self._finish(JobStatus.CANCELLED, Note("Fine-tuning job cancelled"))
            return
        self.retry_or_fail(f"{message}; the next attempt waited {pause:.0f} s for space", code=DISK_FULL)

    def _cancel_requested(self) -> bool:
        return until_answered(
            lambda: get_job(self.db, self.job.id).cancel_requested, "reading the job", between=self.between
        )

    def retry_or_fail(self, message: str, code: str = "trainer_crashed") -> None:
        """A crash that may not happen again: queued again from its checkpoint, until failures run out
        (then failed with `code`)."""
        job = until_answered(
            lambda: fail_attempt(self.db, self.job.id, self.attempt, message, self.settings.max_attempts, code),
            f"ending attempt {self.attempt} of job {self.job.id}",
            between=self.between,
        )
        if job.status == JobStatus.QUEUED:
            self.queue.send(job)

    def succeed(self, run: RunLayout) -> None:
        result = json.loads(run.result.read_text())
        base = JobSpec.model_validate(self.job.spec).model
        model_id = fine_tuned_model_id(base, self.job.suffix, self.job.id)
        results = self._write_results_file(run)
        model = FineTunedModel(
            id=model_id,
            owner=self.job.owner,
            base_model=base,
            job_id=self.job.id,
            path=self.data.relative(run.final),
            created_at=results.created_at,
        )
        created = new_event(self.job.id, f"New fine-tuned model created: {model_id}")
        self._finish(
            JobStatus.SUCCEEDED,
            Note("The job has successfully completed"),
            rows=(results, model, created),
            fine_tuned_model=model_id,
            trained_tokens=result["trained_tokens"],
            result_file_id=results.id,
            error_message=None,
        )

    def _write_results_file(self, run: RunLayout) -> File:
        """OpenAI's step-metrics CSV, a file of the job's owner; its row is committed with the outcome."""
        file_id = new_id("file")
        path = self.data.file(file_id).with_suffix(".csv")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(results_csv(MetricsLog(run.metrics).read()))
        return File(
            id=file_id,
            owner=self.job.owner,
            filename=f"{self.job.id}-results.csv",
            purpose="fine-tune-results",
            bytes=path.stat().st_size,
            sha256=file_sha256(path),
            examples=0,
            path=self.data.relative(path),
            created_at=int(path.stat().st_mtime),
        )


def results_csv(rows: list[dict]) -> str:
    """The results file of metrics.jsonl's rows: OpenAI's columns, then the method's other values."""
    columns = dict(RESULT_COLUMNS)
    for row in rows:
        columns.update(
            (key, key)
            for key in row
            if key.startswith(("train_", "valid_")) and key not in (*columns, *columns.values())
        )
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    writer.writerows([row.get(key, "") for key in columns.values()] for row in rows)
    return buffer.getvalue()
