"""The Celery worker: one job at a time from the queue of its accelerator shape, plus the sweep.

A message only wakes the worker (`lmtune.dispatch`); `workers.job_runner.run_next_job` takes the
next job from the database. The sweep, in a thread of every worker, puts back in the queue the jobs
of lost workers (lease lapsed) and rings again for queued jobs whose message is gone (a Redis
restart empties the queues, a send failed while the broker was down).
"""

from __future__ import annotations

import logging
import os
import socket
import threading

from celery import Celery
from celery.signals import worker_shutting_down

from lmtune.dispatch import RUN_NEXT_JOB_TASK, CeleryJobQueue, create_celery, ring_for_queued_jobs
from lmtune.fence import close_run_folder
from lmtune.settings import Settings
from lmtune.store.database import open_database
from lmtune.store.evals import eval_run_queue, requeue_lost_runs
from lmtune.store.exports import export_queue, requeue_lost_exports
from lmtune.store.jobs import queue_name, requeue_lost_jobs
from lmtune.store.models import JobStatus
from lmtune.store.workers import announce_worker, forget_worker
from workers.eval_runner import run_next_eval
from workers.export_runner import run_next_export
from workers.job_runner import WorkerContext, run_next_job
from workers.lost_runs import settle_ended_run
from workers.presence import measure_resources

log = logging.getLogger(__name__)


def build_worker(settings: Settings, gpus: int) -> tuple[Celery, WorkerContext]:
    app = create_celery(settings)
    context = WorkerContext(
        settings,
        open_database(settings.database_url),
        f"{socket.gethostname()}:{os.getpid()}",
        gpus,
        CeleryJobQueue(settings),
    )

    # this app's own (not shared): a second worker built in one process must not reach the first's context
    @app.task(name=RUN_NEXT_JOB_TASK, ignore_result=True, shared=False)
    def run_next_job_task(queue: str) -> None:
        # one doorbell for every kind of work: the evals queue holds eval runs, the exports queue
        # exports, the others jobs
        if queue == eval_run_queue(settings.queue_prefix):
            run_next_eval(context, queue)
        elif queue == export_queue(settings.queue_prefix):
            run_next_export(context, queue)
        else:
            run_next_job(context, queue)

    @worker_shutting_down.connect(weak=False)
    def on_shutdown(**_) -> None:
        # Celery's warm shutdown would wait for the job to end, hours away: hand it back instead
        context.shutting_down.set()

    return app, context


def requeue_lost(context: WorkerContext) -> None:
    swept = requeue_lost_jobs(
        context.db, context.settings.max_attempts, close=lambda job: close_run_folder(context.data.job(job.id))
    )
    for job in swept:
        if job.status == JobStatus.QUEUED:
            context.queue.send(job)
        else:
            settle_ended_run(context.data, context.db, job)
    for work in (requeue_lost_runs, requeue_lost_exports):
        for row in work(context.db, context.settings.max_attempts):
            context.queue.send(row)


def _repeat(context: WorkerContext, period: float, task, what: str) -> None:
    while not context.shutting_down.wait(period):
        try:
            task()
        except Exception as error:  # a database or broker blip must not end the sweeping thread
            log.warning("%s failed (%s: %s); trying again in %ss", what, type(error).__name__, error, period)


def start_sweeps(context: WorkerContext) -> None:
    settings = context.settings
    for period, task, what in (
        (settings.sweep_seconds, lambda: requeue_lost(context), "requeuing the jobs of lost workers"),
        (settings.redeliver_seconds, lambda: ring_for_queued_jobs(settings, context.db), "ringing for queued jobs"),
    ):
        threading.Thread(target=_repeat, args=(context, period, task, what), daemon=True, name="lmtune-sweep").start()


def start_presence(context: WorkerContext, queues: list[str]) -> None:
    """Alive, and what it has, renewed every sweep; gone from the store when it stops."""
    resources = measure_resources(context.gpus)
    lasts = 3 * context.settings.sweep_seconds + 10  # a few missed renewals are not yet death

    def renew() -> None:
        announce_worker(context.db, context.worker_id, queues, resources, context.db.clock(), lasts)

    renew()
    period = context.settings.sweep_seconds
    threading.Thread(
        target=_repeat, args=(context, period, renew, "renewing the worker's presence"), daemon=True
    ).start()


def run_worker(settings: Settings, gpus: int, queues: list[str] | None = None) -> None:
    app, context = build_worker(settings, gpus)
    start_sweeps(context)
    queues = queues or [
        queue_name(gpus, settings.queue_prefix),
        eval_run_queue(settings.queue_prefix),
        export_queue(settings.queue_prefix),
    ]
    start_presence(context, queues)
    log.info("worker %s with %d GPUs listening on %s", context.worker_id, gpus, ", ".join(queues))
    try:
        app.worker_main(
            [
                "worker",
                "--pool=solo",  # the job runs in this process; its trainer dies with it
                "--concurrency=1",
                "--queues",
                ",".join(queues),
                "--loglevel=INFO",
                "--without-gossip",
                "--without-mingle",
                "--hostname",
                f"lmtune-{os.getpid()}@%h",
            ]
        )
    finally:  # gone at once for the estimates and /metrics (else its row lapses)
        try:
            forget_worker(context.db, context.worker_id)
        except Exception as error:
            log.warning("could not remove this worker's presence (%s); it lapses by itself", error)
