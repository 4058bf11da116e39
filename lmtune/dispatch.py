"""The Celery app, and the doorbell: the broker tells a worker of its queue that a job is waiting.

The database is the queue (`lmtune.store.jobs.claim_next_job`); a message carries only the name of
the queue to look in. So a lost message loses no job (the sweep rings again for queued jobs that
have no message waiting, `ring_for_queued_jobs`), and a repeated one runs nothing twice (the worker
it wakes finds the job taken and goes back to sleep). The long-job settings below are deliberate.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Protocol

from celery import Celery

from lmtune.settings import Settings
from lmtune.store.database import Database
from lmtune.store.evals import queued_counts as queued_run_counts
from lmtune.store.exports import queued_counts as queued_export_counts
from lmtune.store.jobs import queue_name, queued_counts
from lmtune.store.models import Job

log = logging.getLogger(__name__)
RUN_NEXT_JOB_TASK = "lmtune.run_next_job"
# a broker that is down must not hold up the API: a couple of quick tries, then the sweep's turn
_SEND_RETRY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}


def create_celery(settings: Settings) -> Celery:
    app = Celery("lmtune", broker=settings.broker_url)
    # Redis only: the embedded (SQLAlchemy) transport hands its options to create_engine
    transport = {"visibility_timeout": settings.visibility_timeout} if settings.redis_url else {}
    app.conf.update(
        # acknowledge a message when its attempt ends, also when the worker is SIGKILLed: the message
        # then wakes another worker. Since it names no job, a redelivery is at worst a wasted look.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # a worker takes one message at a time and does not hoard them
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        # Redis hands an unacknowledged message to another worker after this long; harmless (see
        # above), but set it past the longest job to spare the look
        broker_transport_options=transport,
        result_backend_transport_options=transport,
        # the store is the truth about jobs; Celery keeps no results
        task_ignore_result=True,
        result_backend=None,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=2,
        task_default_queue=queue_name(0, settings.queue_prefix),
        worker_hijack_root_logger=False,
    )
    return app


@lru_cache(maxsize=4)
def _producer(settings_json: str) -> Celery:
    return create_celery(Settings.model_validate_json(settings_json))


def ring(settings: Settings, queue: str, times: int = 1) -> None:
    """Put `times` messages in `queue`; raises if the broker cannot be reached."""
    producer = _producer(settings.model_dump_json())
    for _ in range(times):
        producer.send_task(RUN_NEXT_JOB_TASK, args=[queue], queue=queue, retry=True, retry_policy=_SEND_RETRY)


class JobQueue(Protocol):
    """Where the API sends a stored job to be run. The database row is the truth; sending only
    tells a worker to look at it, so a repeated send is harmless."""

    def send(self, job: Job) -> None: ...


class CeleryJobQueue:
    """The production queue: a message on the job's broker queue (`send_job`)."""

    def __init__(self, settings: Settings):
        self.settings = settings

    def send(self, job: Job) -> None:
        send_job(self.settings, job)


def send_job(settings: Settings, job: Job) -> None:
    """Tell the workers of the job's queue that it waits. The job is stored already: a broker that
    is down only delays it until the sweep rings again once the broker is back."""
    try:
        ring(settings, job.queue)
    except Exception as error:  # kombu's OperationalError, a refused or reset connection
        log.warning("the broker is unreachable (%s); job %s waits for the next sweep", error, job.id)


def waiting_messages(settings: Settings, queue: str) -> int:
    """Messages in `queue` that no worker has taken yet."""
    with _producer(settings.model_dump_json()).connection_for_write() as connection:
        return connection.default_channel.queue_declare(queue=queue).message_count


def ring_for_queued_jobs(settings: Settings, db: Database) -> dict[str, int]:
    """One waiting message per queued job, eval run and export: rings for each queued job that has none (after a broker
    restart lost them, or a send failed); the number rung per queue."""
    rung = {}
    for queue, queued in {**queued_counts(db), **queued_run_counts(db), **queued_export_counts(db)}.items():
        missing = queued - waiting_messages(settings, queue)
        if missing > 0:
            ring(settings, queue, missing)
            rung[queue] = missing
    return rung
