"""Events and checkpoints of a job, written by its current attempt and read by clients."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from lmtune.ids import new_id
from lmtune.store.database import Database
from lmtune.store.jobs import _fenced, now
from lmtune.store.models import Checkpoint, Event


def add_event(db: Database, job_id: str, message: str, *, attempt: int | None = None, level: str = "info",
              type: str = "message", data: dict | None = None, step: int | None = None) -> Event | None:  # fmt: skip
    """Write an event; with `attempt`, only while that attempt holds the job. A metrics event for a
    step already recorded (a resumed run replays steps after its checkpoint) is skipped: None."""
    event = Event(id=new_id("ftevent"), job_id=job_id, created_at=now(), level=level, type=type,
                  message=message, data=data, step=step)  # fmt: skip
    try:
        with db.session() as session:
            if attempt is not None:
                _fenced(session, job_id, attempt)
            session.add(event)
    except IntegrityError:
        return None
    return event


def list_events(db: Database, job_id: str, *, after: str | None, limit: int) -> tuple[list[Event], bool]:
    """Newest first; `after` is the id of the last event the client saw."""
    return _newest_first(db, Event, Event.seq, job_id, after, limit)


def _newest_first(db: Database, model, order, job_id: str, after: str | None, limit: int):
    """A page of a job's rows, newest first by `order`, after the row with id `after`; (rows, has_more)."""
    with db.session() as session:
        query = select(model).where(model.job_id == job_id).order_by(order.desc())
        if after:
            anchor = session.scalar(select(order).where(model.id == after, model.job_id == job_id))
            if anchor is not None:
                query = query.where(order < anchor)
        rows = session.scalars(query.limit(limit + 1)).all()
    return list(rows[:limit]), len(rows) > limit


def event_seq(db: Database, job_id: str, event_id: str) -> int | None:
    """Where the event with this id stands in its job's order; None if the job has no such event."""
    with db.session() as session:
        return session.scalar(select(Event.seq).where(Event.id == event_id, Event.job_id == job_id))


def events_after_seq(db: Database, job_id: str, seq: int) -> list[Event]:
    """Oldest first: what a stream has not sent yet."""
    with db.session() as session:
        return list(session.scalars(select(Event).where(Event.job_id == job_id, Event.seq > seq).order_by(Event.seq)).all())


def add_checkpoint(db: Database, job_id: str, attempt: int, *, step: int, path: str, metrics: dict | None) -> bool:
    try:
        with db.session() as session:
            _fenced(session, job_id, attempt)
            session.add(Checkpoint(id=new_id("ftckpt"), job_id=job_id, step=step, created_at=now(), path=path, metrics=metrics))
    except IntegrityError:
        return False  # already recorded by an earlier attempt
    return True


def forget_checkpoints(db: Database, job_id: str, attempt: int, keep_steps: set[int]) -> None:
    """Drop rows of checkpoints the trainer pruned from disk."""
    with db.session() as session:
        _fenced(session, job_id, attempt)
        session.execute(delete(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.step.not_in(keep_steps)))


def list_checkpoints(db: Database, job_id: str, *, after: str | None = None, limit: int = 10) -> tuple[list[Checkpoint], bool]:
    return _newest_first(db, Checkpoint, Checkpoint.step, job_id, after, limit)


def get_checkpoint(db: Database, job_id: str, checkpoint_id: str) -> Checkpoint | None:
    with db.session() as session:
        return session.scalar(select(Checkpoint).where(Checkpoint.id == checkpoint_id, Checkpoint.job_id == job_id))


def get_checkpoint_at(db: Database, job_id: str, step: int) -> Checkpoint | None:
    with db.session() as session:
        return session.scalar(select(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.step == step))
