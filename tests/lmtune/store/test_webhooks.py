"""The webhook outbox in the store: an event commits or rolls back with the change it reports,
reaches only its key's endpoints that want its type, is claimed by one deliverer at a time, and is
retried with backoff until a horizon, fenced by the try's number."""

import pytest
from sqlalchemy import func, select

from lmtune.store import jobs as job_store
from lmtune.store import webhooks
from lmtune.store.models import JobStatus, WebhookDelivery, WebhookEvent
from tests.helpers import BOTH_DATABASES

ALICE, BOB = "key-alice", "key-bob"
ALL = list(webhooks.EVENT_TYPES)


def new_job(db, owner=ALICE):
    spec = {"model": "m", "training_file": "file-x", "hyperparameters": {}, "training": {}, "seed": 0}
    return job_store.create_job(db, owner=owner, spec=spec, queue="cpu")


def events(db):
    with db.session() as session:
        return list(session.scalars(select(WebhookEvent).order_by(WebhookEvent.id)))


def deliveries(db):
    with db.session() as session:
        return list(session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)))


@pytest.mark.parametrize("database_url", BOTH_DATABASES, indirect=True)
def test_every_way_a_job_ends_writes_its_event_with_the_status(db):
    ended = {}
    cancelled_queued = new_job(db)
    job_store.request_cancel(db, cancelled_queued.id, ALICE)
    ended[cancelled_queued.id] = "fine_tuning.job.cancelled"

    succeeded = new_job(db)
    _, attempt = job_store.claim_next_job(db, "cpu", "w", 60, 3)
    job_store.finish_attempt(db, succeeded.id, attempt, JobStatus.SUCCEEDED)
    ended[succeeded.id] = "fine_tuning.job.succeeded"

    crashed = new_job(db)
    _, attempt = job_store.claim_next_job(db, "cpu", "w", 60, 1)
    job_store.fail_attempt(db, crashed.id, attempt, "boom", max_attempts=1)
    ended[crashed.id] = "fine_tuning.job.failed"

    lost = new_job(db)
    job_store.claim_next_job(db, "cpu", "w", -1, 1)  # a lease that has lapsed already
    job_store.requeue_lost_jobs(db, max_attempts=1)
    ended[lost.id] = "fine_tuning.job.failed"

    paused = new_job(db)
    job_store.request_pause(db, paused.id, ALICE)  # not an end: no event

    assert {event.object_id: event.type for event in events(db)} == ended
    assert all(event.owner == ALICE and event.id.startswith("evt_") for event in events(db))


def test_a_status_change_rolled_back_leaves_no_event(db):
    webhooks.create_endpoint(db, ALICE, "hook", "https://example.com/hook", ALL, 1)
    job = new_job(db)
    with pytest.raises(RuntimeError), db.session() as session:
        row = session.get(job_store.Job, job.id)
        job_store._finish(session, row, JobStatus.CANCELLED, None)
        session.flush()
        assert session.scalar(select(func.count()).select_from(WebhookEvent)) == 1  # written, in the transaction
        raise RuntimeError("the transaction fails after the change")
    assert job_store.get_job(db, job.id).status == JobStatus.QUEUED
    assert events(db) == [] and deliveries(db) == []


def test_an_event_goes_to_the_endpoints_of_its_key_that_want_its_type(db):
    wants_all = webhooks.create_endpoint(db, ALICE, "all", "https://a.example/1", ALL, 1)
    wants_success = webhooks.create_endpoint(db, ALICE, "ok", "https://a.example/2", ["fine_tuning.job.succeeded"], 1)
    bobs = webhooks.create_endpoint(db, BOB, "bob", "https://b.example/", ALL, 1)
    job = new_job(db)
    job_store.request_cancel(db, job.id, ALICE)
    assert [d.endpoint_id for d in deliveries(db)] == [wants_all.id]
    bob_job = new_job(db, BOB)
    job_store.request_cancel(db, bob_job.id, BOB)
    assert sorted(d.endpoint_id for d in deliveries(db)) == sorted([wants_all.id, bobs.id])
    assert wants_success.id not in {d.endpoint_id for d in deliveries(db)}


def test_endpoints_of_another_key_are_invisible(db):
    endpoint = webhooks.create_endpoint(db, ALICE, "hook", "https://a.example/", ALL, 1)
    assert webhooks.get_endpoint(db, endpoint.id, BOB) is None
    assert webhooks.list_endpoints(db, BOB, None, 10) == ([], False)
    assert not webhooks.delete_endpoint(db, endpoint.id, BOB)
    assert webhooks.update_endpoint(db, endpoint.id, BOB, 2, name="x") is None
    assert webhooks.rotate_secret(db, endpoint.id, BOB, 2, None) is None
    assert webhooks.get_endpoint(db, endpoint.id, ALICE).name == "hook"


def _pending_delivery(db, created_at=1000):
    endpoint = webhooks.create_endpoint(db, ALICE, "hook", "https://a.example/", ALL, created_at)
    with db.session() as session:
        webhooks.record_event(session, ALICE, "fine_tuning.job.succeeded", "ftjob-1", created_at)
    return endpoint


@pytest.mark.parametrize("database_url", BOTH_DATABASES, indirect=True)
def test_a_claimed_delivery_is_not_claimed_again_until_its_claim_lapses(db):
    _pending_delivery(db)
    first = webhooks.claim_due(db, 1000, 40, {}, 4, 10)
    assert len(first) == 1 and first[0].attempt == 1
    assert webhooks.claim_due(db, 1030, 40, {}, 4, 10) == []  # another deliverer finds nothing
    again = webhooks.claim_due(db, 1041, 40, {}, 4, 10)  # the first deliverer died: its claim lapsed
    assert [claim.delivery_id for claim in again] == [first[0].delivery_id] and again[0].attempt == 2
    assert again[0].body == first[0].body  # the same event body, and the same webhook-id
    # the late answer of the first try is refused: the second holds the delivery
    assert not webhooks.record_try(db, first[0], 1042, 200, None, None)
    assert webhooks.record_try(db, again[0], 1042, 200, None, None)
    assert deliveries(db)[0].status == webhooks.SUCCEEDED


def test_failed_tries_back_off_doubling_then_give_up_at_the_horizon(db):
    _pending_delivery(db, created_at=0)
    waits, now = [], 0.0
    while True:
        [claim] = webhooks.claim_due(db, now, 40, {}, 4, 10)
        again = webhooks.retry_at(claim, now, first_delay=5, horizon_seconds=4 * 3600)
        webhooks.record_try(db, claim, now, 503, "answered 503", again)
        if again is None:
            break
        waits.append(again - now)
        now = again
    assert waits[:4] == [5, 10, 20, 40] and max(waits) == 3600  # the first retry within 30 s; capped at an hour
    assert sum(waits) <= 4 * 3600
    [delivery] = deliveries(db)
    assert delivery.status == webhooks.FAILED and delivery.attempts == len(waits) + 1
    assert delivery.last_status_code == 503 and delivery.last_error == "answered 503"


def test_claims_keep_to_the_free_slots_of_each_endpoint(db):
    busy = webhooks.create_endpoint(db, ALICE, "busy", "https://a.example/", ALL, 1)
    other = webhooks.create_endpoint(db, ALICE, "other", "https://b.example/", ALL, 1)
    with db.session() as session:
        for n in range(6):
            webhooks.record_event(session, ALICE, "fine_tuning.job.failed", f"ftjob-{n}", 1)
    claims = webhooks.claim_due(db, 10, 40, {busy.id: 0}, 2, 100)  # the busy endpoint has no free slot
    assert [claim.endpoint_id for claim in claims] == [other.id, other.id]


def test_rotating_with_the_old_secret_kept_signs_with_both_for_a_day(db):
    endpoint = webhooks.create_endpoint(db, ALICE, "hook", "https://a.example/", ALL, 1)
    rotated = webhooks.rotate_secret(db, endpoint.id, ALICE, 100, keep_old_for=86400)
    assert rotated.secret != endpoint.secret
    assert webhooks.signing_secrets(rotated, 200) == [rotated.secret, endpoint.secret]
    assert webhooks.signing_secrets(rotated, 100 + 86400) == [rotated.secret]
    assert webhooks.signing_secrets(webhooks.rotate_secret(db, endpoint.id, ALICE, 300, None), 301) == [
        webhooks.get_endpoint(db, endpoint.id, ALICE).secret
    ]


@pytest.mark.parametrize("database_url", BOTH_DATABASES, indirect=True)
def test_an_eval_run_s_end_writes_its_event_with_the_status(db):
    from lmtune.store import evals

    made = evals.create_eval(db, ALICE, name="e", data_source_config={}, testing_criteria=[])
    fields = {"eval_id": made.id, "name": "r", "model": "", "data_source": {}, "queue": "evals"}
    canceled = evals.create_run(db, ALICE, **fields)
    evals.cancel_run(db, canceled.id, made.id, ALICE)
    completed = evals.create_run(db, ALICE, **fields)
    _, attempt = evals.claim_next_run(db, "evals", "w", 60, 3)
    evals.finish_run(db, completed.id, attempt, evals.COMPLETED)
    crashed = evals.create_run(db, ALICE, **fields)
    _, attempt = evals.claim_next_run(db, "evals", "w", 60, 1)
    evals.fail_attempt(db, crashed.id, attempt, "boom", max_attempts=1)
    assert {event.object_id: event.type for event in events(db)} == {
        canceled.id: "eval.run.canceled",
        completed.id: "eval.run.succeeded",
        crashed.id: "eval.run.failed",
    }
