"""A job's life in the store: created, queued, claimed by one attempt, followed, finished.

Delivery is at least once; outcomes are exactly once by fencing. A worker claims a job and gets
an attempt number and a lease it must renew; every later write names that attempt and is refused
(StaleAttempt) once another attempt holds the job. A worker whose lease lapses is presumed lost:
the sweep puts its job back in the queue (resuming from its checkpoint) until attempts run out.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import func, or_, select, update

from lmtune.ids import new_id
from lmtune.store.database import Database, get_owned
from lmtune.store.models import ApiKey, Job

TERMINAL = ("succeeded", "failed", "cancelled")
ACTIVE = ("queued", "running")  # what the per-key job quota counts


class StaleAttempt(Exception):
    """This attempt no longer holds the job: stop without writing anything more."""


class WrongState(Exception):
    def __init__(self, job: Job, action: str):
        super().__init__(f"cannot {action} job {job.id}: it is {job.status}")
        self.job = job


class TooManyActiveJobs(Exception):
    """The key already has its limit of jobs queued or running: these."""

    def __init__(self, active: list[str]):
        super().__init__(f"{len(active)} jobs queued or running")
        self.active = active


@dataclass(frozen=True)
class Control:
    """What the client asked of a running job, read at each heartbeat."""

    cancel: bool
    pause: bool


def now() -> int:
    return int(time.time())


def queue_name(gpus: int, prefix: str = "") -> str:
    return f"{prefix}{'cpu' if gpus == 0 else f'gpu-{gpus}'}"


def create_job(db: Database, *, owner: str, spec: dict, queue: str, gpus: int = 0, suffix: str | None = None,
               metadata: dict | None = None, max_active: int | None = None) -> Job:  # fmt: skip
    """A queued job; with `max_active`, refused (TooManyActiveJobs) when the owner already has that many."""
    job = Job(
        id=new_id("ftjob"), owner=owner, spec=spec, suffix=suffix, job_metadata=metadata, gpus=gpus,
        queue=queue, status="queued", created_at=now(), attempt=0, step=0,
        cancel_requested=False, pause_requested=False, output_bytes=0,
    )  # fmt: skip
    with db.session() as session:
        if max_active is not None:
            _take_active_slot(session, owner, max_active)
        session.add(job)
    return job


def _take_active_slot(session, owner: str, max_active: int) -> None:
    # write to the key's row first: concurrent submissions by one key then count one at a time
    # (a row lock on PostgreSQL, the write lock on SQLite), so a burst cannot overshoot the limit
    session.execute(update(ApiKey).where(ApiKey.id == owner).values(name=ApiKey.name))
    active = session.scalars(select(Job.id).where(Job.owner == owner, Job.status.in_(ACTIVE)).order_by(Job.id)).all()
    if len(active) >= max_active:
        raise TooManyActiveJobs(list(active))


def record_output_bytes(db: Database, job_id: str, size: int) -> None:
    """What the job's run folder holds now; a measurement, so any attempt (or none) may write it."""
    with db.session() as session:
        session.execute(update(Job).where(Job.id == job_id).values(output_bytes=size))


def output_bytes(db: Database, owner: str, largest: int = 3) -> tuple[int, list[tuple[str, int]]]:
    """(bytes in the owner's job run folders, the `largest` jobs as (id, bytes))."""
    with db.session() as session:
        total = session.scalar(select(func.coalesce(func.sum(Job.output_bytes), 0)).where(Job.owner == owner))
        top = session.execute(select(Job.id, Job.output_bytes).where(Job.owner == owner, Job.output_bytes > 0)
                              .order_by(Job.output_bytes.desc()).limit(largest)).all()  # fmt: skip
    return int(total), [(row[0], int(row[1])) for row in top]


def get_job(db: Database, job_id: str, owner: str | None = None) -> Job | None:
    return get_owned(db, Job, job_id, owner)


def list_jobs(db: Database, owner: str, *, after: str | None, limit: int, metadata: dict[str, str] | None = None,
              status: str | None = None):  # fmt: skip
    """Newest first, cursor after a job id, optionally only jobs in a status or whose metadata has these pairs;
    (jobs, has_more)."""
    query = select(Job).where(Job.owner == owner).order_by(Job.id.desc())  # ids sort by creation time
    if after:
        query = query.where(Job.id < after)
    if status:
        query = query.where(Job.status == status)
    for key, value in (metadata or {}).items():
        query = query.where(Job.job_metadata[key].as_string() == value)
    with db.session() as session:
        jobs = session.scalars(query.limit(limit + 1)).all()
    return list(jobs[:limit]), len(jobs) > limit


def queue_position(db: Database, job: Job) -> int | None:
    """1 for the next job its queue will start; None unless it is queued."""
    return queue_positions(db, [job]).get(job.id)


def queue_positions(db: Database, jobs: list[Job]) -> dict[str, int]:
    """The queue position of each queued job among `jobs`, in one query (a page of a list)."""
    queued = [job for job in jobs if job.status == "queued"]
    if not queued:
        return {}
    with db.session() as session:
        ahead = session.execute(
            select(Job.queue, Job.id).where(
                Job.queue.in_({job.queue for job in queued}), Job.status == "queued",
                Job.id <= max(job.id for job in queued),
            )
        ).all()  # fmt: skip
    positions = {}
    for job in queued:
        positions[job.id] = sum(1 for queue, job_id in ahead if queue == job.queue and job_id <= job.id)
    return positions


def mark_enqueued(db: Database, job_id: str) -> None:
    with db.session() as session:
        session.execute(update(Job).where(Job.id == job_id).values(enqueued_at=db.clock()))


def claim_job(db: Database, job_id: str, worker: str, lease_seconds: float, max_attempts: int) -> int | None:
    """Take a queued job (or one whose holder's lease lapsed) for a new attempt; None if not ours to run."""
    moment = db.clock()
    with db.session() as session:
        job = session.get(Job, job_id, with_for_update=True)
        if job is None or job.status in TERMINAL or job.status == "paused":
            return None
        if job.status == "running" and (job.lease_expires_at or 0) > moment:
            return None  # a live attempt holds it: this delivery is a duplicate
        if job.cancel_requested:
            _finish(job, "cancelled")
            return None
        if job.failures >= max_attempts:
            _finish(job, "failed", error_code="attempts_exhausted",
                    error_message=f"{job.failures} attempts failed; the last: {job.error_message or 'the worker was lost'}")  # fmt: skip
            return None
        job.attempt += 1
        job.status = "running"
        job.lease_owner = worker
        job.lease_expires_at = moment + lease_seconds
        job.started_at = job.started_at or int(moment)
        return job.attempt


def _fenced(session, job_id: str, attempt: int) -> Job:
    job = session.get(Job, job_id, with_for_update=True)
    if job is None or job.attempt != attempt or job.status != "running":
        raise StaleAttempt(f"attempt {attempt} of job {job_id} no longer holds it")
    return job


def heartbeat(db: Database, job_id: str, attempt: int, lease_seconds: float) -> Control:
    with db.session() as session:
        job = _fenced(session, job_id, attempt)
        job.lease_expires_at = db.clock() + lease_seconds
        return Control(cancel=job.cancel_requested, pause=job.pause_requested)


def record_progress(db: Database, job_id: str, attempt: int, *, metrics: dict, estimated_finish: int | None,
                    hyperparameters: dict | None = None) -> None:  # fmt: skip
    with db.session() as session:
        job = _fenced(session, job_id, attempt)
        job.step = metrics["step"]
        job.total_steps = metrics["total_steps"]
        job.trained_tokens = metrics["tokens"]
        job.latest_metrics = metrics
        job.estimated_finish = estimated_finish
        if hyperparameters is not None:
            job.hyperparameters = hyperparameters


def finish_attempt(db: Database, job_id: str, attempt: int, status: str, **fields) -> Job:
    """End this attempt: a final status, `paused`, or `queued` again for a retry."""
    with db.session() as session:
        job = _fenced(session, job_id, attempt)
        _finish(job, status, **fields)
        return job


def _finish(job: Job, status: str, **fields) -> None:
    job.status = status
    for key, value in fields.items():
        setattr(job, key, value)
    job.lease_owner = None
    job.lease_expires_at = None
    job.pause_requested = False
    if status in TERMINAL:
        job.finished_at = now()
        job.estimated_finish = None


def request_cancel(db: Database, job_id: str, owner: str) -> Job:
    with db.session() as session:
        job = _owned(session, job_id, owner)
        if job.status in TERMINAL:
            raise WrongState(job, "cancel")
        if job.status == "running":
            job.cancel_requested = True  # the worker stops the trainer within the grace period
        else:
            job.cancel_requested = True
            _finish(job, "cancelled")  # queued or paused: it never starts again
        return job


def request_pause(db: Database, job_id: str, owner: str) -> Job:
    with db.session() as session:
        job = _owned(session, job_id, owner)
        if job.status == "queued":
            _finish(job, "paused")
        elif job.status == "running":
            job.pause_requested = True  # the worker asks the trainer to checkpoint and stop
        else:
            raise WrongState(job, "pause")
        return job


def resume_job(db: Database, job_id: str, owner: str, max_active: int | None = None) -> Job:
    with db.session() as session:
        job = _owned(session, job_id, owner)
        if job.status != "paused":
            raise WrongState(job, "resume")
        if max_active is not None:
            _take_active_slot(session, owner, max_active)
        job.status = "queued"
        return job


def _owned(session, job_id: str, owner: str) -> Job:
    job = session.get(Job, job_id, with_for_update=True)
    if job is None or job.owner != owner:
        raise LookupError(job_id)
    return job


def requeue_lost_jobs(db: Database, max_attempts: int) -> list[str]:
    """Running jobs whose lease lapsed go back to `queued` (or fail once out of attempts); their ids."""
    moment = db.clock()
    requeued = []
    with db.session() as session:
        lost = session.scalars(
            select(Job).where(Job.status == "running", Job.lease_expires_at < moment).with_for_update()
        ).all()
        for job in lost:
            if job.cancel_requested:
                _finish(job, "cancelled")
            elif job.failures + 1 >= max_attempts:
                _finish(job, "failed", error_code="worker_lost", failures=job.failures + 1,
                        error_message=f"the worker running attempt {job.attempt} was lost, the last of {max_attempts} failures allowed")  # fmt: skip
            else:
                _finish(job, "queued", error_message="the worker was lost", failures=job.failures + 1)
                requeued.append(job.id)
    return requeued


def unheld_queued_jobs(db: Database, older_than_seconds: float) -> list[Job]:
    """Queued jobs whose message may be gone (a broker restart empties Redis): to send again."""
    cutoff = db.clock() - older_than_seconds
    with db.session() as session:
        return list(
            session.scalars(
                select(Job).where(Job.status == "queued", or_(Job.enqueued_at.is_(None), Job.enqueued_at < cutoff))
            ).all()
        )
