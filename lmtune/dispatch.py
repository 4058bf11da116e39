"""The Celery app and sending jobs to it. The message carries the job id only; the store has the rest.

The long-job settings below are deliberate (see docs/architecture.md, "A job's life"): each guards
against a way Celery on Redis loses or doubles a long job by default.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Protocol

from celery import Celery

from lmtune.settings import Settings
from lmtune.store.database import Database
from lmtune.store.jobs import mark_enqueued, queue_name
from lmtune.store.models import Job

RUN_JOB_TASK = "lmtune.run_job"


def create_celery(settings: Settings) -> Celery:
    app = Celery("lmtune", broker=settings.broker_url)
    # Redis only: the embedded (SQLAlchemy) transport hands its options to create_engine
    transport = {"visibility_timeout": settings.visibility_timeout} if settings.redis_url else {}
    app.conf.update(
        # acknowledge a job's message only when its attempt ends, so a lost worker's job comes back
        task_acks_late=True,
        # ... also when the worker process is SIGKILLed or OOM-killed (attempts are capped in the store)
        task_reject_on_worker_lost=True,
        # a worker takes one message at a time and does not hoard queued jobs
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        # Redis hands an unacknowledged message to another worker after this long: it must exceed the
        # longest job, or a long job runs twice. A crashed worker's job is re-queued sooner by the
        # lease sweep (settings.lease_seconds), so this is only the broker's last resort.
        broker_transport_options=transport,
        result_backend_transport_options=transport,
        # the store is the truth about jobs; Celery keeps no results
        task_ignore_result=True,
        result_backend=None,
        broker_connection_retry_on_startup=True,
        task_default_queue=queue_name(0, settings.queue_prefix),
        worker_hijack_root_logger=False,
    )
    return app


@lru_cache(maxsize=4)
def _producer(broker_url: str, settings_json: str) -> Celery:
    return create_celery(Settings.model_validate_json(settings_json))


class JobQueue(Protocol):
    """Where the API sends a stored job to be run. The database row is the truth; sending only
    tells a worker to look at it, so a repeated send is harmless."""

    def send(self, job: Job) -> None: ...


class CeleryJobQueue:
    """The production queue: a Celery message on the job's broker queue."""

    def __init__(self, settings: Settings, db: Database):
        self.settings, self.db = settings, db

    def send(self, job: Job) -> None:
        enqueue_job(self.settings, self.db, job)


def enqueue_job(settings: Settings, db: Database, job: Job) -> None:
    producer = _producer(settings.broker_url, settings.model_dump_json())
    producer.send_task(RUN_JOB_TASK, args=[job.id], queue=job.queue)
    mark_enqueued(db, job.id)
