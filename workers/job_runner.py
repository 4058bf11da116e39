"""One turn of a worker: claim the next job of its queue, run one attempt of it, record the end.

The three stages live apart: `job_inputs` (what the trainer is given), `supervision` with
`progress_reporter` (the trainer running, its progress recorded), `outcome` (how it ended). Every
write names this attempt; once another attempt holds the job the store refuses (StaleAttempt), this
one kills its trainer, and the trainer's own fence (lmtune.fence) has stopped it writing already.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.exc import SQLAlchemyError

from lmtune.dispatch import JobQueue
from lmtune.fence import claim_run_folder
from lmtune.layout import DataLayout, latest_checkpoint
from lmtune.metrics_log import MetricsLog
from lmtune.problems import replace_paths
from lmtune.quotas import folder_bytes
from lmtune.settings import Settings
from lmtune.store.database import Database, until_answered
from lmtune.store.jobs import StaleAttempt, claim_next_job, record_output_bytes, start_from_step
from lmtune.store.models import Job
from workers.gang import gather, run_as_member
from workers.job_inputs import InputError, trainer_spec, training_eval
from workers.lease_keeper import LeaseKeeper
from workers.outcome import Recorder
from workers.progress_reporter import ProgressReporter
from workers.supervision import Ending, supervise
from workers.training.entry import trainer_command
from workers.training.errors import EXIT_PAUSED

log = logging.getLogger(__name__)


@dataclass
class WorkerContext:
    settings: Settings
    db: Database
    worker_id: str
    gpus: int
    # where the worker sends a job it hands back (a retry, a shutdown, a gang that did not fill)
    queue: JobQueue
    # set when the worker is asked to stop (SIGTERM: docker stop, pre-emption): the running job is
    # checkpointed and handed back to the queue
    shutting_down: threading.Event = field(default_factory=threading.Event)
    # the models eval runs sample (workers.eval_runner), loaded on first use and kept for the next run
    eval_models: object = None
    # the command that runs one node's trainer (workers.training.entry.trainer_command's arguments)
    trainer_command: Callable[..., list[str]] = trainer_command

    @property
    def data(self) -> DataLayout:
        return DataLayout(self.settings.data_dir)


def run_next_job(ctx: WorkerContext, queue: str) -> None:
    """Woken by a message of `queue`: run the job that is next there, if any is left."""
    if ctx.shutting_down.is_set() or run_as_member(ctx, queue):
        return
    claimed = claim_next_job(ctx.db, queue, ctx.worker_id, ctx.settings.lease_seconds, ctx.settings.max_attempts)
    if claimed is None:
        log.info("nothing queued in %s (another worker took it, or the message was a repeat)", queue)
        return
    job, attempt = claimed
    with LeaseKeeper(ctx.db, job.id, attempt, ctx.settings.lease_seconds) as lease:
        recorder = Recorder(
            ctx.settings,
            ctx.db,
            ctx.queue,
            job,
            attempt,
            between=lease.check,
            back_off=lambda s: _back_off(ctx, lease, s),
        )
        try:
            _run_attempt(ctx, job, attempt, lease, recorder)
        except StaleAttempt:
            log.warning("attempt %d of job %s was superseded; stopped", attempt, job.id)
        except Exception as error:  # a fault of the worker, not of the job: end the attempt explicitly
            log.exception("attempt %d of job %s failed in the worker", attempt, job.id)
            try:
                recorder.retry_or_fail(f"the worker failed: {_describe(ctx, error)}")
            except StaleAttempt:
                pass


def _describe(ctx: WorkerContext, error: Exception) -> str:
    """For the job's events: never a statement or a server path."""
    if isinstance(error, SQLAlchemyError):
        return f"a database error ({type(getattr(error, 'orig', None) or error).__name__})"
    reason = replace_paths(str(error), {str(ctx.settings.data_dir): "<data folder>"})[:500]
    return f"{type(error).__name__}: {reason}"


def _back_off(ctx: WorkerContext, lease: LeaseKeeper, seconds: float) -> bool:
    """Waits `seconds` holding the job (its lease renewed); False once it is cancelled or the worker stops."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if ctx.shutting_down.wait(min(left, 1.0)) or getattr(lease.control, "cancel", False):
            return False
        lease.check()
    return True


def _run_attempt(ctx: WorkerContext, job: Job, attempt: int, lease: LeaseKeeper, recorder: Recorder) -> None:
    # the database may blink during set-up as at any other time: tried again while the lease holds
    try:
        spec, evaluation = until_answered(
            lambda: (trainer_spec(ctx.db, ctx.data, job), training_eval(ctx.db, ctx.data, job)),
            f"resolving the inputs of job {job.id}",
            between=lease.check,
        )
    except InputError as error:
        recorder.fail(error.code, str(error), error.param)
        return
    run = ctx.data.job(job.id)
    # from here on the run folder is this attempt's: an older trainer still running stops at its next step
    claim_run_folder(run, attempt)
    # each step is recorded once: what earlier attempts wrote past the step this one starts at goes
    resume = latest_checkpoint(run.checkpoints)
    start = resume[0] if resume else 0
    MetricsLog(run.metrics).truncate_after(start)
    until_answered(lambda: start_from_step(ctx.db, job.id, attempt, start), "starting the attempt", between=lease.check)

    spec_path = ctx.data.trainer_spec(job.id)
    spec_path.write_text(spec.model_dump_json(indent=2))
    if evaluation is not None:  # the trainer reads training.eval_id's eval here
        run.eval_definition.write_text(evaluation.model_dump_json(indent=2))
    reporter = ProgressReporter(ctx.db, ctx.data, job.id, attempt)
    gang = gather(ctx, job, attempt, lease) if job.nodes > 1 else None  # the other nodes of a multi-node job
    if job.nodes > 1 and gang is None:
        return  # handed back: its gang did not fill in time
    command = ctx.trainer_command(spec_path, run.root, job.gpus, model_name=job.spec["model"])
    log_path = ctx.data.trainer_log(job.id)
    ending = supervise(ctx.settings, command, log_path, attempt, reporter, lease, ctx.shutting_down, gang)
    if gang and ending.code == EXIT_PAUSED and ending.stop_reason is None:
        ending = Ending(ending.code, "shutdown")  # another node's worker is stopping: the gang checkpointed
    recorder.outcome(ending)
    size = folder_bytes(run.root)  # with the final model, for the storage quota
    until_answered(lambda: record_output_bytes(ctx.db, job.id, size), "recording the run's size", between=lease.check)
