"""Exports in the store: a job's model written in another format (GGUF) by a worker.

An export is work a worker takes from the database as it takes a job or an eval run
(lmtune.store.leases): queued, claimed for an attempt with a lease the worker renews, every write
fenced by that attempt; a lost worker's export is queued again. There is one row per job, source
(final model or checkpoint), format and quantization: asking again returns it, and a failed one is
queued again.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from lmtune.ids import new_id
from lmtune.store import leases
from lmtune.store.database import Database, get_owned
from lmtune.store.models import Export

QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"


def now() -> int:
    return int(time.time())


def export_queue(prefix: str = "") -> str:
    """The broker queue of exports: every worker listens to it beside its own."""
    return f"{prefix}exports"


def request_export(
    db: Database,
    owner: str,
    job_id: str,
    source: str,
    step: int | None,
    fmt: str,
    quantization: str,
    queue: str,
    before_queueing: Callable[[], None] = lambda: None,
) -> tuple[Export, bool]:
    """The export of this kind, made (queued) if there is none and queued again if it failed:
    (row, whether a worker must be told). `before_queueing` may refuse (raise) what is not kept yet."""
    key = (Export.job_id == job_id, Export.source == source, Export.format == fmt, Export.quantization == quantization)
    for _ in range(2):  # a concurrent request may insert the same row first
        try:
            with db.session() as session:
                row = session.scalar(select(Export).where(*key).with_for_update())
                if row is not None and row.status != FAILED:
                    return row, False
                before_queueing()
                if row is None:
                    row = Export(
                        id=new_id("export"),
                        owner=owner,
                        job_id=job_id,
                        source=source,
                        step=step,
                        format=fmt,
                        quantization=quantization,
                        queue=queue,
                        created_at=now(),
                        attempt=0,
                    )
                    session.add(row)
                row.status, row.failures, row.error_code, row.error_message = QUEUED, 0, None, None
                row.finished_at = None
                return row, True
        except IntegrityError:
            continue
    raise RuntimeError(f"could not store the export of {job_id}")


def get_export(db: Database, export_id: str, job_id: str, owner: str) -> Export | None:
    row = get_owned(db, Export, export_id, owner)
    return row if row is not None and row.job_id == job_id else None


def exports_of_job(db: Database, job_id: str, owner: str) -> list[Export]:
    with db.session() as session:
        return list(
            session.scalars(select(Export).where(Export.owner == owner, Export.job_id == job_id).order_by(Export.id))
        )


# -- for workers


def claim_next_export(
    db: Database, queue: str, worker: str, lease_seconds: float, max_attempts: int
) -> tuple[Export, int] | None:
    """The next queued export of `queue` in fair order, claimed for a new attempt: (row, attempt), or None."""
    order = leases.fair_order(Export, queue, QUEUED, RUNNING)
    claimed = leases.claim_next(
        db,
        order,
        lambda row_id: leases.claim_row(
            db, Export, row_id, worker, lease_seconds, max_attempts, (QUEUED, RUNNING, FAILED), _finish, _start
        ),
    )
    return None if claimed is None else (get_owned(db, Export, claimed[0], None), claimed[1])


def _start(row: Export) -> None:
    row.started_at, row.progress = now(), 0.0


def heartbeat(db: Database, export_id: str, attempt: int, lease_seconds: float) -> None:
    with db.session() as session:
        leases.fenced(session, Export, export_id, attempt, RUNNING).lease_expires_at = db.clock() + lease_seconds


def record_progress(db: Database, export_id: str, attempt: int, progress: float) -> None:
    with db.session() as session:
        leases.fenced(session, Export, export_id, attempt, RUNNING).progress = progress


def finish_export(db: Database, export_id: str, attempt: int, status: str, **fields) -> Export:
    with db.session() as session:
        row = leases.fenced(session, Export, export_id, attempt, RUNNING)
        _finish(row, status, **fields)
        return row


def fail_attempt(db: Database, export_id: str, attempt: int, message: str, max_attempts: int) -> Export:
    """A crash that may not happen again: queued again until `max_attempts` attempts have failed."""
    with db.session() as session:
        row = leases.fenced(session, Export, export_id, attempt, RUNNING)
        leases.count_failure(row, message, max_attempts, _finish, QUEUED, FAILED)
        return row


def _finish(row: Export, status: str, **fields) -> None:
    leases.release(row, status, **fields)
    if status in (SUCCEEDED, FAILED):
        row.finished_at = now()


def requeue_lost_exports(db: Database, max_attempts: int) -> list[Export]:
    """Running exports whose lease lapsed go back to `queued` (or fail); the requeued ones."""
    requeued = []
    with db.session() as session:
        for row in leases.lapsed(session, Export, RUNNING, db.clock()):
            if row.failures >= max_attempts:
                _finish(row, FAILED, error_code="worker_lost", error_message="the worker writing it was lost")
            else:
                _finish(row, QUEUED, error_message="the worker was lost")
                requeued.append(row)
    return requeued


def queued_counts(db: Database) -> dict[str, int]:
    with db.session() as session:
        rows = session.execute(select(Export.queue, func.count()).where(Export.status == QUEUED).group_by(Export.queue))
        return {queue: count for queue, count in rows}
