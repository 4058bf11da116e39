"""The run folder of a job the sweep took from a lost worker. Its trainer may live on (the worker
stalled, or was cut off from the database): the sweep closes the folder to it at once, in its
transaction (lmtune.fence.close_run_folder), so it stops at its next write. When the job ended
there, the folder is brought back to what the job's records say, so that the metrics, checkpoints
and model the API lists are what is on disk."""

from __future__ import annotations

import shutil

from lmtune.layout import DataLayout, complete_checkpoints
from lmtune.metrics_log import MetricsLog
from lmtune.quotas import folder_bytes
from lmtune.store.database import Database
from lmtune.store.history import keep_checkpoints
from lmtune.store.jobs import record_output_bytes
from lmtune.store.models import TERMINAL, Job, JobStatus


def settle_ended_run(data: DataLayout, db: Database, job: Job) -> None:
    """After the sweep ended `job`: what the orphan trainer wrote past the recorded step goes, and so
    do the records of checkpoints it pruned. (A job queued again is settled by its next attempt.)"""
    if job.status not in TERMINAL:
        return
    run = data.job(job.id)
    if not run.root.is_dir():
        return
    if run.metrics.exists():
        MetricsLog(run.metrics).truncate_after(job.step)
    for step, folder in complete_checkpoints(run.checkpoints):
        if step > job.step:
            shutil.rmtree(folder, ignore_errors=True)
    partials = [*run.checkpoints.glob(".partial-*"), *run.root.glob(".partial-*")]
    if job.status != JobStatus.SUCCEEDED:  # a model and result of a job that did not succeed: never listed
        partials += [run.final]
        run.result.unlink(missing_ok=True)
    for folder in partials:
        shutil.rmtree(folder, ignore_errors=True)
    keep_checkpoints(db, job.id, {step for step, _ in complete_checkpoints(run.checkpoints)})
    record_output_bytes(db, job.id, folder_bytes(run.root))
