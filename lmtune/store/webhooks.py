"""Webhooks in the store: an API key's endpoints, its events, and the outbox of deliveries.

An event is written by `record_event` inside the transaction of the change it reports (a job's end
in lmtune/store/jobs.py, an eval run's in lmtune/store/evals.py), with one delivery row per
endpoint of the key that wants its type: a change rolled back leaves no event, a committed one is
delivered even if every process restarts meanwhile. A deliverer (`lmtune deliver-webhooks`)
claims due deliveries (`claim_due`: locked rows are skipped, so deliverers never take one row at
once), and records each answer fenced by the try's number (`record_try`): a deliverer that stalled
past its claim cannot overwrite a later try. Tries back off exponentially until the horizon.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import delete, func, select, update

from lmtune.backoff import pause_after
from lmtune.ids import new_id
from lmtune.store.database import Database, get_owned
from lmtune.store.models import WebhookDelivery, WebhookEndpoint, WebhookEvent
from lmtune.webhook_signing import new_secret

JOB_EVENTS = {
    "succeeded": "fine_tuning.job.succeeded",
    "failed": "fine_tuning.job.failed",
    "cancelled": "fine_tuning.job.cancelled",
}
EVAL_EVENTS = {"completed": "eval.run.succeeded", "failed": "eval.run.failed", "canceled": "eval.run.canceled"}
EVENT_TYPES = (*JOB_EVENTS.values(), *EVAL_EVENTS.values())  # what lmtune sends; OpenAI has more
PENDING, SUCCEEDED, FAILED = "pending", "succeeded", "failed"
MAX_ENDPOINTS_PER_KEY = 20
ERROR_CHARS = 500


@dataclass(frozen=True)
class Claim:
    """One try of one delivery, taken by a deliverer: what to send where, and the try's number."""

    delivery_id: str  # the webhook-id header, the same on every try
    attempt: int
    endpoint_id: str
    url: str
    secrets: list[str]  # each signs it: the current secret, and the previous while it lasts
    body: bytes
    event_created_at: int


class TooManyEndpoints(Exception):
    pass


def event_body(event: WebhookEvent) -> bytes:
    """OpenAI's webhook body; the same bytes on every try, since it depends on the event alone."""
    return body_of(event.id, event.created_at, event.type, event.object_id)


def body_of(event_id: str, created_at: int, event_type: str, object_id: str) -> bytes:
    body = {"id": event_id, "object": "event", "created_at": created_at, "type": event_type, "data": {"id": object_id}}
    return json.dumps(body, separators=(",", ":")).encode()


def record_event(session, owner: str, event_type: str, object_id: str, created_at: int) -> WebhookEvent:
    """Write an event of `owner` and its deliveries in `session`, the transaction of the change."""
    event = WebhookEvent(
        id=new_id("evt", "_"), owner=owner, type=event_type, object_id=object_id, created_at=created_at
    )
    session.add(event)
    endpoints = session.scalars(select(WebhookEndpoint).where(WebhookEndpoint.owner == owner)).all()
    for endpoint in endpoints:
        if endpoint.event_types is None or event_type in endpoint.event_types:
            session.add(_delivery(event, endpoint.id, created_at))
    return event


def _delivery(event: WebhookEvent, endpoint_id: str, created_at: int) -> WebhookDelivery:
    return WebhookDelivery(
        id=new_id("wh", "_"),
        event_id=event.id,
        endpoint_id=endpoint_id,
        status=PENDING,
        attempts=0,
        next_attempt_at=float(created_at),
        created_at=created_at,
    )


def record_job_end(session, job) -> None:
    """The webhook event of a job that has just reached a final status (in the same transaction)."""
    record_event(session, job.owner, JOB_EVENTS[str(job.status)], job.id, job.finished_at)


def record_eval_run_end(session, run) -> None:
    """The webhook event of an eval run that has just reached a final status (in the same transaction)."""
    record_event(session, run.owner, EVAL_EVENTS[run.status], run.id, run.finished_at)


def create_endpoint(db: Database, owner: str, name: str, url: str, event_types: list[str], now: int):
    """A new endpoint of `owner` with a new secret; TooManyEndpoints past the limit."""
    with db.session() as session:
        count = session.scalar(select(func.count()).where(WebhookEndpoint.owner == owner))
        if count >= MAX_ENDPOINTS_PER_KEY:
            raise TooManyEndpoints(f"this key has {count} webhook endpoints, the most allowed; delete one first")
        endpoint = WebhookEndpoint(
            id=new_id("whep", "_"),
            owner=owner,
            name=name,
            url=url,
            event_types=sorted(set(event_types)),
            secret=new_secret(),
            created_at=now,
            updated_at=now,
        )
        session.add(endpoint)
    return endpoint


def list_endpoints(db: Database, owner: str, after: str | None, limit: int) -> tuple[list[WebhookEndpoint], bool]:
    """Oldest first, after an endpoint id; (endpoints, has_more)."""
    query = select(WebhookEndpoint).where(WebhookEndpoint.owner == owner).order_by(WebhookEndpoint.id)
    if after:
        query = query.where(WebhookEndpoint.id > after)
    with db.session() as session:
        rows = session.scalars(query.limit(limit + 1)).all()
    return list(rows[:limit]), len(rows) > limit


def get_endpoint(db: Database, endpoint_id: str, owner: str) -> WebhookEndpoint | None:
    return get_owned(db, WebhookEndpoint, endpoint_id, owner)


def update_endpoint(db: Database, endpoint_id: str, owner: str, now: int, **fields) -> WebhookEndpoint | None:
    """Change name, url or event_types (those given); updated_at moves only when something changed."""
    with db.session() as session:
        endpoint = session.get(WebhookEndpoint, endpoint_id, with_for_update=True)
        if endpoint is None or endpoint.owner != owner:
            return None
        if "event_types" in fields:
            fields["event_types"] = sorted(set(fields["event_types"]))
        changed = {key: value for key, value in fields.items() if getattr(endpoint, key) != value}
        for key, value in changed.items():
            setattr(endpoint, key, value)
        if changed:
            endpoint.updated_at = now
    return endpoint


def rotate_secret(db: Database, endpoint_id: str, owner: str, now: int, keep_old_for: int | None):
    """A new secret; the old one also signs for `keep_old_for` seconds more, or stops at once."""
    with db.session() as session:
        endpoint = session.get(WebhookEndpoint, endpoint_id, with_for_update=True)
        if endpoint is None or endpoint.owner != owner:
            return None
        endpoint.previous_secret = endpoint.secret if keep_old_for else None
        endpoint.previous_secret_expires_at = now + keep_old_for if keep_old_for else None
        endpoint.secret = new_secret()
        endpoint.updated_at = now
    return endpoint


def signing_secrets(endpoint: WebhookEndpoint, now: float) -> list[str]:
    """The secrets a delivery is signed with now: the current one, and the previous while it lasts."""
    previous = endpoint.previous_secret
    keep = previous is not None and (endpoint.previous_secret_expires_at or 0) > now
    return [endpoint.secret, previous] if keep else [endpoint.secret]


def delete_endpoint(db: Database, endpoint_id: str, owner: str) -> bool:
    """The endpoint and its deliveries (pending ones are never sent)."""
    with db.session() as session:
        endpoint = session.get(WebhookEndpoint, endpoint_id)
        if endpoint is None or endpoint.owner != owner:
            return False
        session.execute(delete(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id))
        session.delete(endpoint)
    return True


def recent_deliveries(db: Database, endpoint_id: str, limit: int) -> list[tuple[WebhookDelivery, WebhookEvent]]:
    """The endpoint's deliveries, newest first, each with its event."""
    with db.session() as session:
        rows = session.execute(
            select(WebhookDelivery, WebhookEvent)
            .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
            .where(WebhookDelivery.endpoint_id == endpoint_id)
            .order_by(WebhookDelivery.id.desc())
            .limit(limit)
        ).all()
    return [(delivery, event) for delivery, event in rows]


def claim_due(
    db: Database, now: float, claim_seconds: float, free_slots: dict[str, int], per_endpoint: int, limit: int
) -> list[Claim]:
    """Due deliveries for a deliverer to try now, at most `per_endpoint` per endpoint (fewer where
    `free_slots` says this deliverer has fewer free) and `limit` in all. Each becomes due again
    `claim_seconds` later unless its answer is recorded first (the deliverer died: another tries)."""
    due = (WebhookDelivery.status == PENDING) & (WebhookDelivery.next_attempt_at <= now)
    turn = func.row_number().over(partition_by=WebhookDelivery.endpoint_id, order_by=WebhookDelivery.next_attempt_at)
    ranked = select(WebhookDelivery.id, WebhookDelivery.endpoint_id, turn.label("turn")).where(due).subquery()
    with db.session() as session:
        candidates = session.execute(
            select(ranked.c.id, ranked.c.endpoint_id).where(ranked.c.turn <= per_endpoint).order_by(ranked.c.turn)
        ).all()
        wanted, taken = [], {}
        for delivery_id, endpoint_id in candidates:
            if taken.get(endpoint_id, 0) < free_slots.get(endpoint_id, per_endpoint) and len(wanted) < limit:
                wanted.append(delivery_id)
                taken[endpoint_id] = taken.get(endpoint_id, 0) + 1
        if not wanted:
            return []
        # rows another deliverer holds are skipped, not waited for (PostgreSQL; SQLite has one writer)
        rows = session.execute(
            select(WebhookDelivery, WebhookEvent, WebhookEndpoint)
            .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
            .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
            .where(WebhookDelivery.id.in_(wanted), due)
            .with_for_update(skip_locked=True, of=WebhookDelivery)
        ).all()
        claims = []
        for delivery, event, endpoint in rows:
            attempt = delivery.attempts + 1
            claimed = session.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id == delivery.id, WebhookDelivery.attempts == attempt - 1, due)
                .values(attempts=attempt, next_attempt_at=now + claim_seconds)
                .execution_options(synchronize_session=False)
            )
            if claimed.rowcount == 1:
                claims.append(
                    Claim(
                        delivery.id,
                        attempt,
                        endpoint.id,
                        endpoint.url,
                        signing_secrets(endpoint, now),
                        event_body(event),
                        event.created_at,
                    )
                )
    return claims


def record_try(
    db: Database,
    claim: Claim,
    tried_at: float,
    status_code: int | None,
    error: str | None,
    retry_at: float | None,
) -> bool:
    """The answer to one try: succeeded without `error`; else pending again until `retry_at`, or
    failed for good when there is none. False if a later try holds the delivery (nothing written)."""
    fields = {
        "last_attempt_at": int(tried_at),
        "last_status_code": status_code,
        "last_error": error[:ERROR_CHARS] if error else None,
    }
    if error is None:
        fields["status"] = SUCCEEDED
    elif retry_at is None:
        fields["status"] = FAILED
    else:
        fields["next_attempt_at"] = retry_at
    with db.session() as session:
        written = session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == claim.delivery_id,
                WebhookDelivery.attempts == claim.attempt,
                WebhookDelivery.status == PENDING,
            )
            .values(**fields)
        )
        return written.rowcount == 1


def retry_at(claim: Claim, tried_at: float, first_delay: float, horizon_seconds: float, max_delay: float = 3600):
    """When to try again after failed try number `claim.attempt`: the delay doubles from
    `first_delay` up to `max_delay`; None once that would pass the event's horizon."""
    at = tried_at + pause_after(claim.attempt, first_delay, max_delay)
    return at if at <= claim.event_created_at + horizon_seconds else None


def delivery_counts(db: Database) -> dict[str, int]:
    """Deliveries by status, and `retrying`: pending ones that have failed at least once."""
    with db.session() as session:
        counts = dict(
            session.execute(select(WebhookDelivery.status, func.count()).group_by(WebhookDelivery.status)).all()
        )
        counts["retrying"] = session.scalar(
            select(func.count()).where(WebhookDelivery.status == PENDING, WebhookDelivery.last_error.is_not(None))
        )
    return {status: counts.get(status, 0) for status in (PENDING, SUCCEEDED, FAILED, "retrying")}


def prune_events(db: Database, before: int) -> int:
    """Events older than `before` with their deliveries, whatever became of them; how many."""
    with db.session() as session:
        old = select(WebhookEvent.id).where(WebhookEvent.created_at < before)
        session.execute(delete(WebhookDelivery).where(WebhookDelivery.event_id.in_(old)))
        return session.execute(delete(WebhookEvent).where(WebhookEvent.created_at < before)).rowcount
