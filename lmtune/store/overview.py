"""The deployment at a glance, read from the store when /metrics is scraped: jobs by status and
queue, queue depth and wait, live workers, attempts and hand-backs, the running jobs' speed, and
webhook deliveries. Read from the database, so every API process answers the same figures."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from sqlalchemy import func, or_, select

from lmtune.store.database import Database
from lmtune.store.models import Event, Job, JobStatus
from lmtune.store.webhooks import delivery_counts
from lmtune.store.workers import live_workers

# the notes the worker writes when an attempt hands its job back (workers/outcome.py)
HANDBACK_NOTES = ("The worker is shutting down;%", "Fine-tuning job paused at step%")


@dataclass
class RunningJob:
    id: str
    queue: str
    steps_per_second: float | None
    tokens_per_second: float | None


@dataclass
class Overview:
    jobs: dict[tuple[str, str], int] = field(default_factory=dict)  # (status, queue): jobs
    oldest_queued: dict[str, int] = field(default_factory=dict)  # queue: created_at of its oldest queued job
    live_workers: Counter = field(default_factory=Counter)  # queue: workers taking from it
    attempts: dict[str, int] = field(default_factory=dict)  # queue: attempts started (over jobs still stored)
    failed_attempts: dict[str, int] = field(default_factory=dict)
    handbacks: dict[str, int] = field(default_factory=dict)
    running: list[RunningJob] = field(default_factory=list)
    webhook_deliveries: dict[str, int] = field(default_factory=dict)


def overview(db: Database, now: float) -> Overview:
    seen = Overview()
    with db.session() as session:
        for status, queue, count in session.execute(
            select(Job.status, Job.queue, func.count()).group_by(Job.status, Job.queue)
        ):
            seen.jobs[(str(status), queue)] = count
        seen.oldest_queued = dict(
            session.execute(
                select(Job.queue, func.min(Job.created_at)).where(Job.status == JobStatus.QUEUED).group_by(Job.queue)
            ).all()
        )
        for queue, attempts, failures in session.execute(
            select(Job.queue, func.sum(Job.attempt), func.sum(Job.failures)).group_by(Job.queue)
        ):
            seen.attempts[queue], seen.failed_attempts[queue] = int(attempts or 0), int(failures or 0)
        seen.handbacks = dict(
            session.execute(
                select(Job.queue, func.count())
                .join(Event, Event.job_id == Job.id)
                .where(Event.type == "message", or_(*(Event.message.like(note) for note in HANDBACK_NOTES)))
                .group_by(Job.queue)
            ).all()
        )
        for job_id, queue, metrics in session.execute(
            select(Job.id, Job.queue, Job.latest_metrics).where(Job.status == JobStatus.RUNNING)
        ):
            metrics = metrics or {}
            elapsed = metrics.get("elapsed_seconds")
            rate = metrics["step"] / elapsed if elapsed and metrics.get("step") else None
            seen.running.append(RunningJob(job_id, queue, rate, metrics.get("tokens_per_second")))
    for worker in live_workers(db, now):
        seen.live_workers.update(worker.queues)
    seen.webhook_deliveries = delivery_counts(db)
    return seen
