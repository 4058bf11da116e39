"""What a job, an eval run and an export share as work that a worker takes from the database: the
fair order in which queued rows are taken, the fence on every write of an attempt (lmtune.store.jobs
has the whole story), and, for eval runs and exports, taking a row for an attempt, releasing it and
finding those whose worker was lost. A leased table has `owner`, `queue`, `status`, `attempt`,
`failures`, `lease_owner` and `lease_expires_at` columns; its own module names its queued and running
statuses.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import aliased


class StaleAttempt(Exception):
    """This attempt no longer holds the job: stop without writing anything more."""


def fair_order(model, queue: str, queued: str, running: str):
    """The queued rows of `queue` with their place in dispatch order, as a subquery (id, turn).

    Round-robin across API keys: a key's k-th queued row (k from 0, oldest first) takes its turn
    after the rows the key already runs, so `turn` = running rows of the key + k; ties go to the
    oldest (ids sort by creation time). A key with many queued rows never starves another's one.
    """
    other = aliased(model)
    running_of_owner = select(func.count()).where(other.owner == model.owner, other.status == running).scalar_subquery()
    rank = func.row_number().over(partition_by=model.owner, order_by=model.id) - 1
    return (
        select(model.id.label("id"), (running_of_owner + rank).label("turn"))
        .where(model.queue == queue, model.status == queued)
        .subquery()
    )


def claim_next(db, order, claim) -> tuple[str, int] | None:
    """The first row of `order` (a `fair_order` subquery) that `claim(row_id)` takes for a new
    attempt: (row id, attempt), or None when nothing is left. A row another worker took in between is
    skipped, and the order read again."""
    for _ in range(10):
        with db.session() as session:
            candidates = session.scalars(select(order.c.id).order_by(order.c.turn, order.c.id).limit(5)).all()
        if not candidates:
            return None
        for row_id in candidates:
            attempt = claim(row_id)
            if attempt is not None:
                return row_id, attempt
    return None


def fenced(session, model, row_id: str, attempt: int, running: str):
    """The row, locked, if `attempt` still holds it; else StaleAttempt."""
    row = session.get(model, row_id, with_for_update=True)
    if row is None or row.attempt != attempt or row.status != running:
        raise StaleAttempt(f"attempt {attempt} of {row_id} no longer holds it")
    return row


def claim_row(db, model, row_id: str, worker: str, lease_seconds: float, max_attempts: int, statuses, finish, start):
    """Take a queued row for a new attempt: its number, or None when it is no longer queued. A row
    whose `max_attempts` are spent is ended as failed instead (`finish`, as the row's module ends
    one); `start` marks a row as its attempt starts. `statuses`: the module's (queued, running, failed)."""
    queued, running, failed = statuses
    with db.session() as session:
        row = session.get(model, row_id, with_for_update=True)
        if row is None or row.status != queued:
            return None
        if row.failures >= max_attempts:
            finish(row, failed, error_code="attempts_exhausted", error_message=f"{row.failures} attempts failed")
            return None
        start(row)
        return take(row, worker, db.clock() + lease_seconds, running)


def take(row, worker: str, expires_at: float, running: str) -> int:
    """A queued row claimed by `worker` for a new attempt; the attempt's number."""
    row.attempt += 1
    row.status = running
    row.lease_owner = worker
    row.lease_expires_at = expires_at
    return row.attempt


def release(row, status: str, **fields) -> None:
    """The row's attempt ends: its new status and fields, no lease."""
    row.status = status
    for key, value in fields.items():
        setattr(row, key, value)
    row.lease_owner = None
    row.lease_expires_at = None


def count_failure(row, message: str, max_attempts: int, finish, queued: str, failed: str) -> None:
    """A crash that may not happen again: `finish` the row as queued again, until `max_attempts`
    attempts have failed."""
    row.failures += 1
    if row.failures < max_attempts:
        finish(row, queued, error_message=message)
    else:
        finish(row, failed, error_code="worker_error", error_message=f"{message}; the last of {row.failures} attempts")


def lapsed(session, model, running: str, now: float) -> list:
    """Running rows whose lease lapsed (their worker is presumed lost), locked, each with one more failure."""
    rows = session.scalars(
        select(model)
        .where(model.status == running, model.lease_expires_at < now)
        .with_for_update(skip_locked=True)  # as requeue_lost_jobs: a stalled holder never blocks the sweep
    ).all()
    for row in rows:
        row.failures += 1
    return list(rows)
