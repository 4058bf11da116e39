"""The Celery worker: one job at a time, from the queue of its accelerator shape, plus the sweep.

The task is a thin adapter around `workers.job_runner.run_job`. The sweep, in a thread of every
worker, puts back in the queue the jobs of lost workers (lease lapsed) and the queued jobs whose
message may have been lost (a Redis restart empties the queues); a duplicate message is harmless
because a claim needs the job to be free.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

from celery import Celery
from celery.signals import worker_shutting_down

from lmtune.dispatch import RUN_JOB_TASK, create_celery, enqueue_job
from lmtune.settings import Settings
from lmtune.store import records
from lmtune.store.database import open_database
from lmtune.store.jobs import get_job, queue_name, requeue_lost_jobs, unheld_queued_jobs
from workers.job_runner import WorkerContext, run_job

log = logging.getLogger(__name__)
RESEND_QUEUED_AFTER_SECONDS = 900


def build_worker(settings: Settings, gpus: int) -> tuple[Celery, WorkerContext]:
    app = create_celery(settings)
    context = WorkerContext(settings, open_database(settings.database_url), f"{socket.gethostname()}:{os.getpid()}", gpus)

    @app.task(name=RUN_JOB_TASK, ignore_result=True)
    def run_job_task(job_id: str) -> None:
        run_job(context, job_id)

    @worker_shutting_down.connect(weak=False)
    def on_shutdown(**_) -> None:
        # Celery's warm shutdown would wait for the job to end, hours away: hand it back instead
        context.shutting_down.set()

    return app, context


def sweep(context: WorkerContext) -> None:
    db, settings = context.db, context.settings
    for job_id in requeue_lost_jobs(db, settings.max_attempts):
        records.add_event(db, job_id, "The worker running this job was lost; it continues from its last checkpoint", level="warn")
        enqueue_job(settings, db, get_job(db, job_id))
    for job in unheld_queued_jobs(db, older_than_seconds=RESEND_QUEUED_AFTER_SECONDS):
        enqueue_job(settings, db, job)


def _sweep_forever(context: WorkerContext) -> None:
    while True:
        time.sleep(context.settings.sweep_seconds)
        try:
            sweep(context)
        except Exception:  # a database blip must not end the sweeping thread
            log.exception("sweep failed; trying again in %ss", context.settings.sweep_seconds)


def run_worker(settings: Settings, gpus: int, queues: list[str] | None = None) -> None:
    app, context = build_worker(settings, gpus)
    threading.Thread(target=_sweep_forever, args=(context,), daemon=True, name="lmtune-sweep").start()
    queues = queues or [queue_name(gpus, settings.queue_prefix)]
    log.info("worker %s with %d GPUs listening on %s", context.worker_id, gpus, ", ".join(queues))
    app.worker_main([
        "worker", "--pool=solo",  # the job runs in this process; its trainer dies with it
        "--concurrency=1", "--queues", ",".join(queues), "--loglevel=INFO",
        "--without-gossip", "--without-mingle", "--hostname", f"lmtune-{os.getpid()}@%h",
    ])  # fmt: skip
