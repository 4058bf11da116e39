"""A job's life in the store: created, queued, claimed by one attempt, followed, finished.

The database is the queue: a worker woken by any message claims the next queued job of its queue
(`claim_next_job`), so a lost or repeated message is harmless. Outcomes are exactly once by
fencing: a claim gives an attempt number and a lease to renew; every later write names that attempt
and is refused (StaleAttempt) once another attempt holds the job. A worker whose lease lapses is
presumed lost: the sweep puts its job back in the queue (resuming from its checkpoint) until
failures run out.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial

from sqlalchemy import bindparam, delete, exists, func, select, update

from lmtune.ids import new_id
from lmtune.store import leases
from lmtune.store.database import Database, get_owned, plain_columns, until_answered
from lmtune.store.key_reads import KEY_ID, read_with_key, with_key
from lmtune.store.leases import StaleAttempt, fair_order  # noqa: F401  (StaleAttempt: imported from here by the workers)
from lmtune.store.models import ALLOWED_ACTIONS, TERMINAL, ApiKey, Event, FineTunedModel, Job, JobAction, JobStatus
from lmtune.store.webhooks import record_job_end

COUNTED_BY_QUOTA = (JobStatus.QUEUED, JobStatus.RUNNING)  # what the per-key job quota counts


class WrongState(Exception):
    def __init__(self, job: Job, action: str):
        super().__init__(f"cannot {action} job {job.id}: it is {job.status}")
        self.job = job


def _check_allowed(job: Job, action: JobAction) -> None:
    """WrongState unless the job's status allows `action` (ALLOWED_ACTIONS, which the job object shows)."""
    if action not in ALLOWED_ACTIONS[job.status]:
        raise WrongState(job, action)


class TooManyActiveJobs(Exception):
    """The key already has its limit of jobs queued or running: these."""

    def __init__(self, active: list[str]):
        super().__init__(f"{len(active)} jobs queued or running")
        self.active = active


@dataclass(frozen=True)
class Control:
    """What the client asked of a running job."""

    cancel: bool
    pause: bool


@dataclass(frozen=True)
class Note:
    """An event to write in the same transaction as a status change."""

    message: str
    level: str = "info"

    def event(self, job_id: str) -> Event:
        return new_event(job_id, self.message, level=self.level)


def now() -> int:
    return int(time.time())


def new_event(
    job_id: str,
    message: str,
    *,
    level: str = "info",
    type: str = "message",
    data: dict | None = None,
    step: int | None = None,
) -> Event:
    return Event(
        id=new_id("ftevent"),
        job_id=job_id,
        created_at=now(),
        level=level,
        type=type,
        message=message,
        data=data,
        step=step,
    )


def queue_name(gpus: int, prefix: str = "") -> str:
    return f"{prefix}{'cpu' if gpus == 0 else f'gpu-{gpus}'}"


def create_job(
    db: Database,
    *,
    owner: str,
    spec: dict,
    queue: str,
    gpus: int = 0,
    nodes: int = 1,
    suffix: str | None = None,
    metadata: dict | None = None,
    max_active: int | None = None,
    session=None,
) -> Job:
    """Store a queued job, inside `session` when given (to commit it with other rows); with
    `max_active`, refused (TooManyActiveJobs) when the owner already has that many."""
    job = Job(
        id=new_id("ftjob"),
        owner=owner,
        spec=spec,
        suffix=suffix,
        job_metadata=metadata,
        gpus=gpus,
        nodes=nodes,
        queue=queue,
        status=JobStatus.QUEUED,
        created_at=now(),
        attempt=0,
        step=0,
        cancel_requested=False,
        pause_requested=False,
        output_bytes=0,
    )
    with nullcontext(session) if session is not None else db.session() as active:
        if max_active is not None:
            _take_active_slot(active, owner, max_active)
        active.add(job)
    return job


def _take_active_slot(session, owner: str, max_active: int) -> None:
    # write to the key's row first: concurrent submissions by one key then count one at a time
    # (a row lock on PostgreSQL, the write lock on SQLite), so a burst cannot overshoot the limit
    session.execute(update(ApiKey).where(ApiKey.id == owner).values(name=ApiKey.name))
    active = session.scalars(
        select(Job.id).where(Job.owner == owner, Job.status.in_(COUNTED_BY_QUOTA)).order_by(Job.id)
    ).all()
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
        top = session.execute(
            select(Job.id, Job.output_bytes)
            .where(Job.owner == owner, Job.output_bytes > 0)
            .order_by(Job.output_bytes.desc())
            .limit(largest)
        ).all()
    return int(total), [(row[0], int(row[1])) for row in top]


def get_job(db: Database, job_id: str, owner: str | None = None) -> Job | None:
    return get_owned(db, Job, job_id, owner)


# What a listed job shows (service.schemas.job_body, and `queue` for a queued job's place), under the
# attributes' names (`job_metadata`, not the column's `metadata`): a page of jobs is read as plain rows,
# which cost a third of building ORM objects, without the lease, quota and placement columns.
LISTED = (
    *("id", "created_at", "finished_at", "status", "queue", "spec", "suffix", "job_metadata", "hyperparameters"),
    *("fine_tuned_model", "result_file_id", "trained_tokens", "error_code", "error_message", "error_param"),
    *("step", "total_steps", "estimated_finish", "latest_metrics", "attempt"),
)


def list_jobs(
    db: Database,
    secret: str,
    *,
    after: str | None,
    limit: int,
    metadata: dict[str, str] | None = None,
    status: str | None = None,
) -> tuple[str | None, list, bool]:
    """A page of the presented key's jobs, newest first, cursor after a job id, optionally only jobs in a
    status or whose metadata has these pairs, read with the key (key_reads): (key id, jobs, has_more);
    (None, [], False) for an unknown key. The jobs are read-only rows with Job's attribute names (LISTED)."""
    metadata = metadata or {}
    query = _list_query(db.engine.dialect.name, after is not None, status is not None, tuple(metadata))
    values = {"after": after, "status": status, "limit": limit + 1}
    values.update({f"value_{index}": value for index, value in enumerate(metadata.values())})
    owner, rows = read_with_key(db, query, secret, values)
    jobs = [row for row in rows if row.id is not None]
    return owner, jobs[:limit], len(jobs) > limit


@functools.lru_cache(maxsize=64)
def _list_query(dialect: str, after: bool, status: bool, metadata_keys: tuple[str, ...]):
    """The list's statement for one shape of filters, built once: building it and its cache key on
    every request cost the job list a fifth of its CPU. The values are bound at execution."""
    query = select(*plain_columns(Job, LISTED)).where(Job.owner == KEY_ID)
    if after:
        query = query.where(Job.id < bindparam("after"))
    if status:
        query = query.where(Job.status == bindparam("status"))
    for index, key in enumerate(metadata_keys):
        query = query.where(_metadata_has(dialect, key, bindparam(f"value_{index}")))
    # ids sort by creation time
    return with_key(query.order_by(Job.id.desc()).limit(bindparam("limit")), order="id", descending=True)


def _metadata_has(dialect: str, key: str, value):
    """The job's metadata holds this pair. SQLite's JSON path syntax cannot name every key (one with
    a `"` never matched), so there the pairs are listed by json_each and compared as plain text;
    PostgreSQL's `->>` takes the key as a bound value."""
    if dialect == "sqlite":
        pairs = func.json_each(Job.job_metadata).table_valued("key", "value")
        return exists(select(1).select_from(pairs).where(pairs.c.key == key, pairs.c.value == value))
    return Job.job_metadata[key].as_string() == value


# The queued jobs of a queue with their turn in dispatch order (lmtune.store.leases.fair_order),
# prepared once: building these statements costs more than running them.
_order = fair_order(Job, bindparam("queue"), JobStatus.QUEUED, JobStatus.RUNNING)
_NEXT = select(_order.c.id).order_by(_order.c.turn, _order.c.id).limit(5)
# Every queued job of one queue numbered once, kept for the ids asked about: a COUNT of the jobs
# ahead, one for each job of a page, read the queue's order once a job (on SQLite, 90 ms for a page
# of twenty queued jobs).
_numbered = select(_order.c.id, func.row_number().over(order_by=(_order.c.turn, _order.c.id)).label("place")).subquery()
_PLACES = select(_numbered.c.id, _numbered.c.place).where(_numbered.c.id.in_(bindparam("ids", expanding=True)))


def queue_position(db: Database, job: Job) -> int | None:
    """1 for the next job its queue will start; None unless it is queued."""
    return queue_positions(db, [job]).get(job.id)


def queue_positions(db: Database, jobs: list[Job]) -> dict[str, int]:
    """The queue position of each queued job among `jobs` (a page of a list): one query a queue."""
    queued: dict[str, list[str]] = {}
    for job in jobs:
        if job.status == JobStatus.QUEUED:
            queued.setdefault(job.queue, []).append(job.id)
    if not queued:
        return {}
    with db.read() as connection:
        return {
            job_id: place
            for queue, ids in queued.items()
            for job_id, place in connection.execute(_PLACES, {"queue": queue, "ids": ids})
        }


def claim_next_job(
    db: Database, queue: str, worker: str, lease_seconds: float, max_attempts: int
) -> tuple[Job, int] | None:
    """The next queued job of `queue` in dispatch order, claimed for a new attempt: (job, attempt), or
    None when nothing is left to run. Two workers never claim the same job: the claim re-reads the
    row under a lock and takes it only if it is still queued."""
    for _ in range(10):  # another worker took the candidate: look again
        with db.read() as connection:
            candidates = connection.scalars(_NEXT, {"queue": queue}).all()
        if not candidates:
            return None
        for job_id in candidates:
            claimed = claim_job(db, job_id, worker, lease_seconds, max_attempts)
            if claimed is not None:  # the job is this worker's now: a blink of the database must not lose it
                return until_answered(partial(get_job, db, job_id), f"reading job {job_id}"), claimed
    return None


def claim_job(db: Database, job_id: str, worker: str, lease_seconds: float, max_attempts: int) -> int | None:
    """Take this queued job for a new attempt; None if it is not queued (held, paused or ended)."""
    moment = db.clock()
    with db.session() as session:
        job = session.get(Job, job_id, with_for_update=True)
        if job is None or job.status != JobStatus.QUEUED:
            return None
        if job.failures >= max_attempts:
            _finish(
                session,
                job,
                JobStatus.FAILED,
                Note(f"Fine-tuning job failed: {job.failures} attempts failed", "error"),
                error_code="attempts_exhausted",
                error_message=f"{job.failures} attempts failed; the last: {job.error_message or 'the worker was lost'}",
            )
            return None
        job.attempt += 1
        job.status = JobStatus.RUNNING
        job.lease_owner = worker
        job.lease_expires_at = moment + lease_seconds
        job.started_at = job.started_at or int(moment)
        session.add(Note(f"Fine-tuning job started (attempt {job.attempt})").event(job.id))
        return job.attempt


def fenced(session, job_id: str, attempt: int) -> Job:
    """The job row, locked, if `attempt` still holds it; else StaleAttempt."""
    return leases.fenced(session, Job, job_id, attempt, JobStatus.RUNNING)


def heartbeat(db: Database, job_id: str, attempt: int, lease_seconds: float) -> Control:
    with db.session() as session:
        job = fenced(session, job_id, attempt)
        job.lease_expires_at = db.clock() + lease_seconds
        return Control(cancel=job.cancel_requested, pause=job.pause_requested)


def start_from_step(db: Database, job_id: str, attempt: int, step: int) -> None:
    """A new attempt continues at `step` (its checkpoint, or 0): what earlier attempts recorded past
    it is dropped, since the trainer writes those steps again."""
    with db.session() as session:
        job = fenced(session, job_id, attempt)
        session.execute(delete(Event).where(Event.job_id == job_id, Event.type == "metrics", Event.step > step))
        job.step = step


def finish_attempt(
    db: Database, job_id: str, attempt: int, status: JobStatus, note: Note | None = None, *, rows: tuple = (), **fields
) -> Job:
    """End this attempt with a status (final, `paused`, or `queued` again for a retry), its event and
    any rows it produced (a results file, a model), all in one transaction."""
    with db.session() as session:
        job = fenced(session, job_id, attempt)
        session.add_all(rows)
        _finish(session, job, status, note, **fields)
        return job


def fail_attempt(
    db: Database, job_id: str, attempt: int, message: str, max_attempts: int, code: str = "trainer_crashed"
) -> Job:
    """A crash that may not happen again: the job is queued again (from its checkpoint) until
    `max_attempts` attempts have failed; then it fails with `code`, keeping the last error."""
    with db.session() as session:
        job = fenced(session, job_id, attempt)
        failures = job.failures + 1
        if failures < max_attempts:
            note = Note(f"Attempt {attempt} failed: {message}; retrying from the last checkpoint", "warn")
            _finish(session, job, JobStatus.QUEUED, note, error_message=message, failures=failures)
        else:
            message = f"{message}; it was the last of {failures} failed attempts allowed"
            _finish(
                session,
                job,
                JobStatus.FAILED,
                Note(f"Fine-tuning job failed: {message}", "error"),
                error_code=code,
                error_message=message,
                failures=failures,
            )
        return job


def _finish(session, job: Job, status: JobStatus, note: Note | None, **fields) -> None:
    job.status = status
    for key, value in fields.items():
        setattr(job, key, value)
    job.lease_owner = None
    job.lease_expires_at = None
    job.pause_requested = False
    if status in TERMINAL:
        job.finished_at = now()
        job.estimated_finish = None
        record_job_end(session, job)  # its webhook event commits, or rolls back, with the status
    if note is not None:
        session.add(note.event(job.id))


def request_cancel(db: Database, job_id: str, owner: str) -> Job:
    with db.session() as session:
        job = _owned(session, job_id, owner)
        _check_allowed(job, JobAction.CANCEL)
        job.cancel_requested = True
        if job.status != JobStatus.RUNNING:  # queued or paused: it never starts again
            _finish(session, job, JobStatus.CANCELLED, Note("Fine-tuning job cancelled"))
        return job  # running: the worker stops the trainer within the grace period


def request_pause(db: Database, job_id: str, owner: str) -> Job:
    with db.session() as session:
        job = _owned(session, job_id, owner)
        _check_allowed(job, JobAction.PAUSE)
        if job.status == JobStatus.QUEUED:
            _finish(session, job, JobStatus.PAUSED, Note("Fine-tuning job paused before it started"))
        else:  # running
            job.pause_requested = True  # the worker asks the trainer to checkpoint and stop
        return job


def requeue_paused(db: Database, job_id: str, owner: str, max_active: int | None = None) -> Job:
    with db.session() as session:
        job = _owned(session, job_id, owner)
        _check_allowed(job, JobAction.RESUME)
        if max_active is not None:
            _take_active_slot(session, owner, max_active)
        job.status = JobStatus.QUEUED
        session.add(Note("Fine-tuning job resumed; it continues from its last checkpoint").event(job.id))
        return job


def delete_job(db: Database, job_id: str, owner: str) -> Job:
    """A job that is neither queued nor running, with its events, checkpoints and fine-tuned model;
    its run folder is the caller's to remove once this has committed."""
    with db.session() as session:
        job = _owned(session, job_id, owner)
        _check_allowed(job, JobAction.DELETE)
        session.execute(delete(FineTunedModel).where(FineTunedModel.job_id == job_id))
        session.delete(job)  # its events and checkpoints go with it (ON DELETE CASCADE)
        return job


def _owned(session, job_id: str, owner: str) -> Job:
    job = session.get(Job, job_id, with_for_update=True)
    if job is None or job.owner != owner:
        raise LookupError(job_id)
    return job


def requeue_lost_jobs(db: Database, max_attempts: int, close: Callable[[Job], object] = lambda job: None) -> list[Job]:
    """Running jobs whose lease lapsed go back to `queued` (or end); all of them, as they are now.
    A row another transaction holds is skipped (its holder may be stalled; the next sweep sees it):
    one stuck worker never holds up the sweep of every other lost job. `close(job)` runs while the
    row is still locked, before any new attempt can claim the job (the run folder's fence)."""
    moment = db.clock()
    swept = []
    with db.session() as session:
        lost = session.scalars(
            select(Job)
            .where(Job.status == JobStatus.RUNNING, Job.lease_expires_at < moment)
            .with_for_update(skip_locked=True)
        ).all()
        for job in lost:
            failures = job.failures + 1
            if job.cancel_requested:
                _finish(session, job, JobStatus.CANCELLED, Note("Fine-tuning job cancelled"))
            elif failures >= max_attempts:
                message = (
                    f"the worker running attempt {job.attempt} was lost, the last of {max_attempts} failures allowed"
                )
                _finish(
                    session,
                    job,
                    JobStatus.FAILED,
                    Note(f"Fine-tuning job failed: {message}", "error"),
                    error_code="worker_lost",
                    failures=failures,
                    error_message=message,
                )
            else:
                _finish(
                    session,
                    job,
                    JobStatus.QUEUED,
                    Note("The worker running this job was lost; it continues from its last checkpoint", "warn"),
                    error_message="the worker was lost",
                    failures=failures,
                )
            close(job)
            swept.append(job)
    return swept


def queued_counts(db: Database) -> dict[str, int]:
    """Queued jobs per queue: each needs a message waiting in the broker to be started."""
    with db.session() as session:
        rows = session.execute(
            select(Job.queue, func.count()).where(Job.status == JobStatus.QUEUED).group_by(Job.queue)
        )
        return {queue: count for queue, count in rows}
