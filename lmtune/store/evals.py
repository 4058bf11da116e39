"""Evals, their runs and the runs' output items in the store.

A run is work a worker takes from the database as it takes a job (lmtune.store.leases): queued, claimed
for an attempt with a lease the worker renews, every write fenced by that attempt; a lost worker's run
is queued again, and its next attempt grades only the items not yet stored (one output item per data
source item). Every read for a client is scoped by the key (`owner`).
"""

from __future__ import annotations

import time

from sqlalchemy import delete, func, select, tuple_, update
from sqlalchemy.orm import object_session

from lmtune.ids import new_id
from lmtune.store import leases
from lmtune.store.database import Database, get_owned
from lmtune.store.models import ApiKey, Eval, EvalOutputItem, EvalRun
from lmtune.store.webhooks import record_eval_run_end

QUEUED, RUNNING, COMPLETED, FAILED, CANCELED = "queued", "in_progress", "completed", "failed", "canceled"
TERMINAL = (COMPLETED, FAILED, CANCELED)
COUNTED_BY_QUOTA = (QUEUED, RUNNING)


class WrongState(Exception):
    def __init__(self, run: EvalRun, action: str):
        super().__init__(f"cannot {action} run {run.id}: it is {run.status}")


class TooManyActiveRuns(Exception):
    def __init__(self, active: list[str]):
        super().__init__(f"{len(active)} eval runs queued or running")
        self.active = active


def now() -> int:
    return int(time.time())


def eval_run_queue(prefix: str = "") -> str:
    """The broker queue of eval runs: every worker listens to it beside its own."""
    return f"{prefix}evals"


# -- evals


def create_eval(db: Database, owner: str, **fields) -> Eval:
    moment = now()
    row = Eval(id=new_id("eval", "_"), owner=owner, created_at=moment, updated_at=moment, **fields)
    with db.session() as session:
        session.add(row)
    return row


def get_eval(db: Database, eval_id: str, owner: str) -> Eval | None:
    return get_owned(db, Eval, eval_id, owner)


def list_evals(db: Database, owner: str, *, after: str | None, limit: int, order: str, order_by: str):
    column = Eval.updated_at if order_by == "updated_at" else Eval.created_at
    return _page(db, Eval, Eval.owner == owner, (column, Eval.id), after, limit, order)


def update_eval(db: Database, eval_id: str, owner: str, **fields) -> Eval | None:
    with db.session() as session:
        row = session.get(Eval, eval_id, with_for_update=True)
        if row is None or row.owner != owner:
            return None
        for key, value in fields.items():
            setattr(row, key, value)
        row.updated_at = now()
        return row


def delete_eval(db: Database, eval_id: str, owner: str) -> bool:
    """The eval with its runs and their output items; a run in progress stops at its next write."""
    with db.session() as session:
        row = session.get(Eval, eval_id)
        if row is None or row.owner != owner:
            return False
        session.execute(delete(EvalRun).where(EvalRun.eval_id == eval_id))
        session.delete(row)
        return True


def _page(db: Database, model, scope, columns: tuple, after: str | None, limit: int, order: str):
    """A page of rows in `order` of `columns` (the last is the id: no ties), after the row `after`."""
    query = select(model).where(scope)
    with db.session() as session:
        if after:
            anchor = session.execute(select(*columns).where(scope, model.id == after)).first()
            if anchor is not None:
                position = tuple_(*columns)
                query = query.where(position > tuple_(*anchor) if order == "asc" else position < tuple_(*anchor))
        sort = [c.asc() if order == "asc" else c.desc() for c in columns]
        rows = session.scalars(query.order_by(*sort).limit(limit + 1)).all()
    return list(rows[:limit]), len(rows) > limit


# -- runs, for clients


def create_run(db: Database, owner: str, *, max_active: int | None = None, **fields) -> EvalRun:
    """A queued run; refused (TooManyActiveRuns) when the key already has `max_active` queued or running."""
    run = EvalRun(
        id=new_id("evalrun", "_"),
        owner=owner,
        status=QUEUED,
        created_at=now(),
        attempt=0,
        failures=0,
        cancel_requested=False,
        **fields,
    )
    with db.session() as session:
        if max_active is not None:
            # the key's row first: concurrent creations by one key count one at a time
            session.execute(update(ApiKey).where(ApiKey.id == owner).values(name=ApiKey.name))
            active = session.scalars(
                select(EvalRun.id)
                .where(EvalRun.owner == owner, EvalRun.status.in_(COUNTED_BY_QUOTA))
                .order_by(EvalRun.id)
            ).all()
            if len(active) >= max_active:
                raise TooManyActiveRuns(list(active))
        session.add(run)
    return run


def get_run(db: Database, run_id: str, eval_id: str, owner: str) -> EvalRun | None:
    run = get_owned(db, EvalRun, run_id, owner)
    return run if run is not None and run.eval_id == eval_id else None


def list_runs(db: Database, eval_id: str, owner: str, *, after, limit: int, order: str, status: str | None):
    scope = (EvalRun.owner == owner) & (EvalRun.eval_id == eval_id)
    if status:
        scope = scope & (EvalRun.status == status)
    return _page(db, EvalRun, scope, (EvalRun.created_at, EvalRun.id), after, limit, order)


def runs_of_job(db: Database, job_id: str, owner: str) -> list[EvalRun]:
    """Runs that sampled a checkpoint or the final model of this job, oldest first."""
    with db.session() as session:
        return list(
            session.scalars(
                select(EvalRun).where(EvalRun.owner == owner, EvalRun.job_id == job_id).order_by(EvalRun.id)
            ).all()
        )


def cancel_run(db: Database, run_id: str, eval_id: str, owner: str) -> EvalRun:
    """A queued run is canceled at once; a running one at its worker's next batch (LookupError, WrongState)."""
    with db.session() as session:
        run = _owned(session, run_id, eval_id, owner)
        if run.status in TERMINAL:
            raise WrongState(run, "cancel")
        run.cancel_requested = True
        if run.status == QUEUED:
            _finish(run, CANCELED)
        return run


def delete_run(db: Database, run_id: str, eval_id: str, owner: str) -> None:
    """The run and its output items; a worker running it stops at its next write (its fence fails)."""
    with db.session() as session:
        session.delete(_owned(session, run_id, eval_id, owner))


def _owned(session, run_id: str, eval_id: str, owner: str) -> EvalRun:
    run = session.get(EvalRun, run_id, with_for_update=True)
    if run is None or run.owner != owner or run.eval_id != eval_id:
        raise LookupError(run_id)
    return run


def list_output_items(db: Database, run: EvalRun, *, after, limit: int, order: str, status: str | None):
    scope = EvalOutputItem.run_id == run.id
    if status:
        scope = scope & (EvalOutputItem.status == status)
    return _page(db, EvalOutputItem, scope, (EvalOutputItem.datasource_item_id, EvalOutputItem.id), after, limit, order)


def get_output_item(db: Database, run: EvalRun, item_id: str) -> EvalOutputItem | None:
    with db.session() as session:
        return session.scalar(
            select(EvalOutputItem).where(EvalOutputItem.id == item_id, EvalOutputItem.run_id == run.id)
        )


# -- runs, for workers


def claim_next_run(
    db: Database, queue: str, worker: str, lease_seconds: float, max_attempts: int
) -> tuple[EvalRun, int] | None:
    """The next queued run of `queue` in fair order, claimed for a new attempt: (run, attempt), or None."""
    order = leases.fair_order(EvalRun, queue, QUEUED, RUNNING)
    claimed = leases.claim_next(
        db,
        order,
        lambda run_id: leases.claim_row(
            db, EvalRun, run_id, worker, lease_seconds, max_attempts, (QUEUED, RUNNING, FAILED), _finish, _start
        ),
    )
    return None if claimed is None else (get_owned(db, EvalRun, claimed[0], None), claimed[1])


def _start(run: EvalRun) -> None:
    run.started_at = run.started_at or now()


def heartbeat(db: Database, run_id: str, attempt: int, lease_seconds: float) -> bool:
    """Renew the lease; whether the client asked to cancel."""
    with db.session() as session:
        run = leases.fenced(session, EvalRun, run_id, attempt, RUNNING)
        run.lease_expires_at = db.clock() + lease_seconds
        return run.cancel_requested


def graded_item_ids(db: Database, run_id: str) -> set[int]:
    """The data source items an earlier attempt already stored."""
    with db.session() as session:
        return set(session.scalars(select(EvalOutputItem.datasource_item_id).where(EvalOutputItem.run_id == run_id)))


def save_items(db: Database, run_id: str, attempt: int, items: list[EvalOutputItem], progress: dict) -> bool:
    """A graded batch and the counts so far, in one fenced transaction; whether to cancel."""
    with db.session() as session:
        run = leases.fenced(session, EvalRun, run_id, attempt, RUNNING)
        session.add_all(items)
        for key, value in progress.items():
            setattr(run, key, value)
        return run.cancel_requested


def output_items_of(db: Database, run_id: str) -> list[EvalOutputItem]:
    with db.session() as session:
        return list(
            session.scalars(
                select(EvalOutputItem).where(EvalOutputItem.run_id == run_id).order_by(EvalOutputItem.seq)
            ).all()
        )


def finish_run(db: Database, run_id: str, attempt: int, status: str, **fields) -> EvalRun:
    with db.session() as session:
        run = leases.fenced(session, EvalRun, run_id, attempt, RUNNING)
        _finish(run, status, **fields)
        return run


def fail_attempt(db: Database, run_id: str, attempt: int, message: str, max_attempts: int) -> EvalRun:
    """A crash that may not happen again: queued again until `max_attempts` attempts have failed."""
    with db.session() as session:
        run = leases.fenced(session, EvalRun, run_id, attempt, RUNNING)
        leases.count_failure(run, message, max_attempts, _finish, QUEUED, FAILED)
        return run


def _finish(run: EvalRun, status: str, **fields) -> None:
    leases.release(run, status, **fields)
    if status in TERMINAL:
        run.finished_at = now()
        # its webhook event commits, or rolls back, with the status (every caller holds the run in a session)
        record_eval_run_end(object_session(run), run)


def requeue_lost_runs(db: Database, max_attempts: int) -> list[EvalRun]:
    """Running runs whose lease lapsed go back to `queued` (or end); the requeued ones."""
    requeued = []
    with db.session() as session:
        for run in leases.lapsed(session, EvalRun, RUNNING, db.clock()):
            if run.cancel_requested:
                _finish(run, CANCELED)
            elif run.failures >= max_attempts:
                _finish(run, FAILED, error_code="worker_lost", error_message="the worker running it was lost")
            else:
                _finish(run, QUEUED, error_message="the worker was lost")
                requeued.append(run)
    return requeued


def queued_counts(db: Database) -> dict[str, int]:
    with db.session() as session:
        rows = session.execute(
            select(EvalRun.queue, func.count()).where(EvalRun.status == QUEUED).group_by(EvalRun.queue)
        )
        return {queue: count for queue, count in rows}
