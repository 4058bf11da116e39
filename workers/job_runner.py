"""One delivery of a job: claim it, run the trainer in a subprocess, report as it goes, record the end.

The Celery task is a thin adapter around `run_job`. Every write names this attempt; if another
attempt has taken the job over, the store refuses (StaleAttempt) and this one stops its trainer.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from lmtune.dispatch import enqueue_job
from lmtune.ids import new_id
from lmtune.launcher import die_with_parent
from lmtune.layout import EXIT_PAUSED, DataLayout, file_sha256
from lmtune.model_refs import ModelNotFound, resolve_model
from lmtune.problems import replace_paths
from lmtune.quotas import folder_bytes
from lmtune.settings import Settings
from lmtune.spec import JobSpec
from lmtune.store import files as file_store
from lmtune.store import records
from lmtune.store.database import Database
from lmtune.store.fine_tuned import add_fine_tuned_model, fine_tuned_model_id
from lmtune.store.jobs import StaleAttempt, claim_job, finish_attempt, get_job, record_output_bytes, record_progress
from lmtune.store.models import Job
from workers.lease_keeper import LeaseKeeper
from workers.model_sources import loadable_source
from workers.run_follower import RunFollower
from lmtune.metrics_log import MetricsLog

log = logging.getLogger(__name__)
POLL_SECONDS = 0.5
RESULT_COLUMNS = ("step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy")


@dataclass
class WorkerContext:
    settings: Settings
    db: Database
    worker_id: str
    gpus: int
    # set when the worker is asked to stop (SIGTERM: docker stop, pre-emption): the running job is
    # checkpointed and handed back to the queue
    shutting_down: threading.Event = field(default_factory=threading.Event)

    @property
    def data(self) -> DataLayout:
        return DataLayout(self.settings.data_dir)


class InputError(Exception):
    def __init__(self, code: str, message: str, param: str):
        super().__init__(message)
        self.code, self.param = code, param


def run_job(ctx: WorkerContext, job_id: str) -> None:
    attempt = claim_job(ctx.db, job_id, ctx.worker_id, ctx.settings.lease_seconds, ctx.settings.max_attempts)
    if attempt is None:
        log.info("job %s is not ours to run (finished, paused, or held by a live attempt)", job_id)
        return
    try:
        with LeaseKeeper(ctx.db, job_id, attempt, ctx.settings.lease_seconds) as lease:
            _run_attempt(ctx, get_job(ctx.db, job_id), attempt, lease)
    except StaleAttempt:
        log.warning("attempt %d of job %s was superseded; stopped", attempt, job_id)
    except Exception as error:  # a fault of the worker, not of the job: end the attempt explicitly
        log.exception("attempt %d of job %s failed in the worker", attempt, job_id)
        reason = replace_paths(str(error), {str(ctx.settings.data_dir): "<data folder>"})[:500]
        _retry_or_fail(ctx, get_job(ctx.db, job_id), attempt, f"the worker failed: {type(error).__name__}: {reason}")


def _run_attempt(ctx: WorkerContext, job: Job, attempt: int, lease: LeaseKeeper) -> None:
    records.add_event(ctx.db, job.id, f"Fine-tuning job started (attempt {attempt})", attempt=attempt)
    try:
        trainer_spec = _trainer_spec(ctx, job)
    except InputError as error:
        _fail(ctx, job, attempt, error.code, str(error), error.param)
        return
    spec_path = ctx.data.trainer_spec(job.id)
    spec_path.parent.mkdir(parents=True, exist_ok=True)
    spec_path.write_text(trainer_spec.model_dump_json(indent=2))

    run = ctx.data.job(job.id)
    command = [sys.executable, "-m", "lmtune.cli", "train", str(spec_path), "--output", str(run.root),
               "--num-processes", str(max(1, job.gpus)), "--model-name", job.spec["model"]]  # fmt: skip
    with ctx.data.trainer_log(job.id).open("ab") as trainer_log:
        trainer = subprocess.Popen(command, stdout=trainer_log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        try:
            stop_reason = _follow(ctx, job, attempt, trainer, RunFollower(run), lease)
        finally:
            if trainer.poll() is None:  # this attempt was superseded or the worker is stopping
                trainer.kill()
                trainer.wait()
    _record_outcome(ctx, job, attempt, trainer.returncode, stop_reason)
    record_output_bytes(ctx.db, job.id, folder_bytes(run.root))


def _trainer_spec(ctx: WorkerContext, job: Job) -> JobSpec:
    """The stored spec with the model name and file ids turned into local paths."""
    spec = JobSpec.model_validate(job.spec)
    update = {"model": _model_source(ctx, spec.model, job.owner, job.id)}
    for name in ("training_file", "validation_file"):
        file_id = getattr(spec, name)
        if file_id:
            row = file_store.get_file(ctx.db, file_id, job.owner)
            if row is None:
                raise InputError("file_not_found", f"{name} {file_id} no longer exists", name)
            update[name] = str(ctx.data.resolve(row.path))
    return spec.model_copy(update=update)


def _model_source(ctx: WorkerContext, name: str, owner: str, job_id: str) -> str:
    try:
        ref = resolve_model(ctx.db, ctx.data, name, owner)
    except ModelNotFound as error:
        raise InputError("model_not_found", str(error), "model") from None
    return loadable_source(ref, ctx.data.job(job_id).start_model)


def _follow(ctx: WorkerContext, job: Job, attempt: int, trainer: subprocess.Popen, follower: RunFollower,
            lease: LeaseKeeper) -> str | None:  # fmt: skip
    """Progress, events and checkpoints until the trainer exits; why it was stopped, if it was."""
    stop_reason, signalled_at = None, 0.0
    while True:
        exited = trainer.poll() is not None
        _report(ctx, job, attempt, follower)
        if exited:
            return stop_reason
        control = lease.check()
        wanted = "cancel" if control.cancel else "pause" if control.pause else "shutdown" if ctx.shutting_down.is_set() else None
        if wanted and stop_reason != wanted:
            # SIGTERM: the trainer finishes its step, writes a checkpoint and exits
            stop_reason, signalled_at = wanted, time.monotonic()
            trainer.send_signal(signal.SIGTERM)
        if stop_reason:  # a pause or a shutdown waits for the checkpoint; a cancel does not wait long
            grace = ctx.settings.cancel_grace_seconds if stop_reason == "cancel" else ctx.settings.pause_grace_seconds
            if time.monotonic() - signalled_at > grace:
                trainer.kill()
        time.sleep(POLL_SECONDS)


def _report(ctx: WorkerContext, job: Job, attempt: int, follower: RunFollower) -> None:
    rows = follower.new_metrics()
    for row in rows:
        records.add_event(ctx.db, job.id, _step_message(row), attempt=attempt, type="metrics", data=_event_data(row), step=row["step"])
    if rows:
        latest = rows[-1]
        seconds_per_step = latest["elapsed_seconds"] / latest["step"]
        finish = int(time.time() + seconds_per_step * (latest["total_steps"] - latest["step"]))
        run_info = follower.layout.run
        hyperparameters = json.loads(run_info.read_text())["hyperparameters"] if run_info.exists() else None
        record_progress(ctx.db, job.id, attempt, metrics=latest, estimated_finish=finish, hyperparameters=hyperparameters)
    for message in follower.new_messages():  # sample sets and trainer notices (early stopping)
        records.add_event(ctx.db, job.id, attempt=attempt, **message)
    changes = follower.checkpoint_changes()
    if changes:
        new, on_disk = changes
        for step, folder in new.items():
            row = follower.rows_by_step.get(step)
            metrics = _event_data(row) if row else None
            if records.add_checkpoint(ctx.db, job.id, attempt, step=step, path=ctx.data.relative(folder), metrics=metrics):
                records.add_event(ctx.db, job.id, f"Checkpoint created at step {step}", attempt=attempt)
        records.forget_checkpoints(ctx.db, job.id, attempt, on_disk)
        record_output_bytes(ctx.db, job.id, folder_bytes(follower.layout.root))


def _event_data(row: dict) -> dict:
    keys = ("step", "total_steps", "train_loss", "train_mean_token_accuracy", "valid_loss",
            "valid_mean_token_accuracy", "full_valid_loss", "full_valid_mean_token_accuracy")  # fmt: skip
    return {key: row[key] for key in keys if key in row}


def _step_message(row: dict) -> str:
    message = f"Step {row['step']}/{row['total_steps']}: training loss={row['train_loss']:.4f}"
    if "valid_loss" in row:
        message += f", validation loss={row['valid_loss']:.4f}"
    return message


def _record_outcome(ctx: WorkerContext, job: Job, attempt: int, code: int, stop_reason: str | None) -> None:
    run = ctx.data.job(job.id)
    if code == 0 and run.result.exists():
        _succeed(ctx, job, attempt)
    elif stop_reason == "cancel":
        finish_attempt(ctx.db, job.id, attempt, "cancelled")
        records.add_event(ctx.db, job.id, "Fine-tuning job cancelled")
    elif stop_reason == "shutdown":
        step = get_job(ctx.db, job.id).step
        finish_attempt(ctx.db, job.id, attempt, "queued")
        records.add_event(ctx.db, job.id, f"The worker is shutting down; the job is queued again and continues from step {step}", level="warn")
        enqueue_job(ctx.settings, ctx.db, get_job(ctx.db, job.id))
    elif code == EXIT_PAUSED or (stop_reason == "pause" and code != 0):
        finish_attempt(ctx.db, job.id, attempt, "paused")
        records.add_event(ctx.db, job.id, f"Fine-tuning job paused at step {get_job(ctx.db, job.id).step}; resume continues from there")
    elif run.error.exists():
        error = json.loads(run.error.read_text())
        _fail(ctx, job, attempt, error["code"], error["message"], error.get("param") or _param_of(error["code"]))
    else:
        _retry_or_fail(ctx, job, attempt, f"the trainer exited with status {code} ({ctx.data.relative(ctx.data.trainer_log(job.id))} has its output)")


def _retry_or_fail(ctx: WorkerContext, job: Job, attempt: int, message: str) -> None:
    """A crash that may not happen again: queue the job again from its checkpoint, until failures run out."""
    failures = get_job(ctx.db, job.id).failures + 1
    if failures < ctx.settings.max_attempts:
        finish_attempt(ctx.db, job.id, attempt, "queued", error_message=message, failures=failures)
        records.add_event(ctx.db, job.id, f"Attempt {attempt} failed: {message}; retrying from the last checkpoint", level="warn")
        enqueue_job(ctx.settings, ctx.db, get_job(ctx.db, job.id))
    else:
        _fail(ctx, job, attempt, "trainer_crashed", f"{message}; it was the last of {failures} failed attempts allowed",
              None, failures=failures)  # fmt: skip


def _param_of(code: str) -> str | None:
    return {"invalid_training_file": "training_file", "model_not_found": "model", "invalid_hyperparameters": "hyperparameters"}.get(code)


def _fail(ctx: WorkerContext, job: Job, attempt: int, code: str, message: str, param: str | None, **fields) -> None:
    finish_attempt(ctx.db, job.id, attempt, "failed", error_code=code, error_message=message, error_param=param, **fields)
    records.add_event(ctx.db, job.id, f"Fine-tuning job failed: {message}", level="error")


def _succeed(ctx: WorkerContext, job: Job, attempt: int) -> None:
    run = ctx.data.job(job.id)
    result = json.loads(run.result.read_text())
    base = JobSpec.model_validate(job.spec).model
    model_id = fine_tuned_model_id(base, job.suffix, job.id)
    results_file = _write_results_file(ctx, job, run)
    add_fine_tuned_model(ctx.db, model_id=model_id, owner=job.owner, base_model=base, job_id=job.id, path=ctx.data.relative(run.final))
    finish_attempt(ctx.db, job.id, attempt, "succeeded", fine_tuned_model=model_id, trained_tokens=result["trained_tokens"],
                   result_file_id=results_file, error_message=None)  # fmt: skip
    records.add_event(ctx.db, job.id, f"New fine-tuned model created: {model_id}")
    records.add_event(ctx.db, job.id, "The job has successfully completed")


def _write_results_file(ctx: WorkerContext, job: Job, run) -> str:
    """OpenAI's step-metrics CSV, stored as a file of the job's owner."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(RESULT_COLUMNS)
    for row in MetricsLog(run.metrics).read():
        writer.writerow([row["step"], row["train_loss"], row["train_mean_token_accuracy"],
                         row.get("valid_loss", ""), row.get("valid_mean_token_accuracy", "")])  # fmt: skip
    file_id = new_id("file")
    path = ctx.data.file(file_id).with_suffix(".csv")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(buffer.getvalue())
    file_store.add_file(ctx.db, file_id=file_id, owner=job.owner, filename=f"{job.id}-results.csv",
                        purpose="fine-tune-results", size=path.stat().st_size, sha256=file_sha256(path), examples=0,
                        path=ctx.data.relative(path))  # fmt: skip
    return file_id
