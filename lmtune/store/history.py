"""A job's history: its events and checkpoints, written by its current attempt's reports and read by clients."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import bindparam, delete, exists, func, select
from sqlalchemy.orm import aliased

from lmtune.ids import new_id
from lmtune.store.database import Database, plain_columns
from lmtune.store.jobs import Control, fenced, new_event, now
from lmtune.store.key_reads import read_with_key, with_key
from lmtune.store.models import ApiKey, Checkpoint, Event, Job


@dataclass
class Report:
    """What one poll of a running trainer found: new metrics rows (as events), sample sets and
    notices (message events), the progress they show, new checkpoints and the steps still on disk."""

    metric_events: list[Event] = field(default_factory=list)
    message_events: list[Event] = field(default_factory=list)  # a sample set's carries its step; a notice's does not
    progress: dict | None = None  # job fields: step, total_steps, trained_tokens, latest_metrics, ...
    checkpoints: dict[int, tuple[str, dict | None]] = field(default_factory=dict)  # step: (path, metrics)
    on_disk: set[int] | None = None
    output_bytes: int | None = None  # the run folder's size, measured when its checkpoints changed


def record_report(db: Database, job_id: str, attempt: int, report: Report) -> Control:
    """One transaction per poll, whatever its size; what the client asks of the job in return.
    Steps, sample sets, notices and checkpoints already recorded (a resumed run or a new attempt
    reads its files again) are skipped."""
    with db.session() as session:
        job = fenced(session, job_id, attempt)
        _add_new_steps(session, job_id, "metrics", report.metric_events)
        _add_new_notices(session, job_id, [event for event in report.message_events if event.step is None])
        _add_new_steps(session, job_id, "message", [event for event in report.message_events if event.step is not None])
        for key, value in (report.progress or {}).items():
            setattr(job, key, value)
        if report.checkpoints:
            recorded = set(
                session.scalars(
                    select(Checkpoint.step).where(Checkpoint.job_id == job_id, Checkpoint.step.in_(report.checkpoints))
                )
            )
            for step, (path, metrics) in report.checkpoints.items():
                if step not in recorded:
                    session.add(
                        Checkpoint(
                            id=new_id("ftckpt"), job_id=job_id, step=step, created_at=now(), path=path, metrics=metrics
                        )
                    )
                    session.add(new_event(job_id, f"Checkpoint created at step {step}"))
        if report.output_bytes is not None:  # counted in the key's storage quota
            job.output_bytes = report.output_bytes
        if report.on_disk is not None:  # checkpoints the trainer pruned from disk
            session.execute(
                delete(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.step.not_in(report.on_disk))
            )
        return Control(cancel=job.cancel_requested, pause=job.pause_requested)


def _add_new_steps(session, job_id: str, type: str, events: list[Event]) -> None:
    """The events of `type` whose step the job has no event of that type for yet (one per step)."""
    steps = {event.step for event in events}
    if not steps:
        return
    known = set(
        session.scalars(select(Event.step).where(Event.job_id == job_id, Event.type == type, Event.step.in_(steps)))
    )
    for event in events:
        if event.step not in known:
            known.add(event.step)
            session.add(event)


def _add_new_notices(session, job_id: str, events: list[Event]) -> None:
    """Trainer notices the job has no event with the same text for: a notice's text names its step
    and is the same however often its file is read (early stop, the best checkpoint made final)."""
    if not events:
        return
    known = set(
        session.scalars(
            select(Event.message).where(
                Event.job_id == job_id, Event.type == "message", Event.message.in_({event.message for event in events})
            )
        )
    )
    for event in events:
        if event.message not in known:
            known.add(event.message)
            session.add(event)


# A page of events is read as plain rows (Event's attribute names) with the key and the job, by one
# statement built once (key_reads): ORM objects, a statement built per request, and a round trip for
# each of the three were most of the events list's CPU. The page starts after the event `after` (its
# seq read by a subquery, and compared in a form the seq index serves; an unknown id is the newest end).
_EVENT_SEQ = select(Event.seq).where(Event.id == bindparam("event_id"), Event.job_id == bindparam("job_id"))
_PAST_EVERY_SEQ = 2**63 - 1
_anchor = (
    select((anchor := aliased(Event)).seq)
    .where(anchor.id == bindparam("after"), anchor.job_id == bindparam("job_id"))
    .scalar_subquery()
)
_EVENTS_PAGE = with_key(
    select(*plain_columns(Event))
    .where(Event.job_id == bindparam("job_id"), Event.seq < func.coalesce(_anchor, _PAST_EVERY_SEQ))
    .order_by(Event.seq.desc())
    .limit(bindparam("rows")),
    order="seq",
    descending=True,
    owns=exists().where(Job.id == bindparam("job_id"), Job.owner == ApiKey.id),
)


def list_events(
    db: Database, secret: str, job_id: str, *, after: str | None, limit: int
) -> tuple[str | None, list | None, bool]:
    """A page of the events of a job of the presented key, newest first, as read-only rows; `after` is
    the id of the last event the client saw: (key id, events, has_more). The events are None if the key
    has no such job; (None, None, False) for an unknown key."""
    owner, rows = read_with_key(db, _EVENTS_PAGE, secret, {"job_id": job_id, "after": after, "rows": limit + 1})
    if owner is None or not rows[0].owned:
        return owner, None, False
    events = [row for row in rows if row.id is not None]
    return owner, events[:limit], len(events) > limit


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
    with db.read() as connection:
        return connection.scalar(_EVENT_SEQ, {"event_id": event_id, "job_id": job_id})


def events_after_seq(db: Database, job_id: str, seq: int) -> list[Event]:
    """Oldest first: what a stream has not sent yet."""
    with db.session() as session:
        return list(
            session.scalars(select(Event).where(Event.job_id == job_id, Event.seq > seq).order_by(Event.seq)).all()
        )


def list_checkpoints(
    db: Database, job_id: str, *, after: str | None = None, limit: int = 10
) -> tuple[list[Checkpoint], bool]:
    return _newest_first(db, Checkpoint, Checkpoint.step, job_id, after, limit)


def get_checkpoint(db: Database, job_id: str, checkpoint_id: str) -> Checkpoint | None:
    with db.session() as session:
        return session.scalar(select(Checkpoint).where(Checkpoint.id == checkpoint_id, Checkpoint.job_id == job_id))


def get_checkpoint_at(db: Database, job_id: str, step: int) -> Checkpoint | None:
    with db.session() as session:
        return session.scalar(select(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.step == step))


def keep_checkpoints(db: Database, job_id: str, steps: set[int]) -> None:
    """The job's checkpoint rows are those of `steps` (the complete ones on disk) and no others. For a
    job that ended without its worker: the rows its lost attempt could not record or remove."""
    with db.session() as session:
        session.execute(delete(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.step.not_in(steps)))
