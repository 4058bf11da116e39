"""The job store on SQLite and on PostgreSQL."""

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import inspect

from lmtune.store import history
from lmtune.store.database import open_database
from lmtune.store.history import Report, record_report
from lmtune.store.jobs import (
    COUNTED_BY_QUOTA,
    JobStatus,
    Note,
    StaleAttempt,
    TooManyActiveJobs,
    WrongState,
    claim_job,
    claim_next_job,
    create_job,
    fail_attempt,
    finish_attempt,
    get_job,
    heartbeat,
    list_jobs,
    new_event,
    queue_position,
    queue_positions,
    request_cancel,
    request_pause,
    requeue_lost_jobs,
    requeue_paused,
    start_from_step,
)
from lmtune.store.keys import create_key
from tests.helpers import BOTH_DATABASES

pytestmark = pytest.mark.parametrize("database_url", BOTH_DATABASES, indirect=True)

SPEC = {"model": "lmtune-tiny", "training_file": "file-abc"}


def new_job(db, owner="key-a", **fields):
    return create_job(db, owner=owner, spec=SPEC, queue="cpu", **fields)


def metrics_report(*steps: int) -> Report:
    return Report(
        metric_events=[new_event("", f"Step {step}", type="metrics", step=step, data={"step": step}) for step in steps]
    )


def record_steps(db, job_id: str, attempt: int, *steps: int):
    report = metrics_report(*steps)
    for event in report.metric_events:
        event.job_id = job_id
    return record_report(db, job_id, attempt, report)


def messages(db, job_id: str) -> list[str]:
    return [event.message for event in history.events_after_seq(db, job_id, 0)]


def test_migrations_create_every_table_and_can_run_again(db, database_url):
    open_database(database_url)  # a second process starting: nothing to do, nothing broken
    assert {"api_keys", "files", "jobs", "events", "checkpoints", "fine_tuned_models"} <= set(
        inspect(db.engine).get_table_names()
    )


def test_a_duplicate_delivery_of_a_held_job_is_refused(db):
    job = new_job(db)
    assert claim_job(db, job.id, "worker-1", lease_seconds=60, max_attempts=3) == 1
    assert claim_job(db, job.id, "worker-2", lease_seconds=60, max_attempts=3) is None
    assert get_job(db, job.id).lease_owner == "worker-1"


def test_a_lost_workers_job_is_requeued_and_its_stale_attempt_fenced_off(db):
    job = new_job(db)
    assert claim_job(db, job.id, "worker-1", lease_seconds=60, max_attempts=3) == 1
    assert requeue_lost_jobs(db, max_attempts=3) == []  # a live lease is left alone
    db.clock = lambda: time.time() + 61  # the worker fell silent past its lease
    assert [j.id for j in requeue_lost_jobs(db, max_attempts=3)] == [job.id]
    assert claim_job(db, job.id, "worker-2", lease_seconds=60, max_attempts=3) == 2
    with pytest.raises(StaleAttempt):
        heartbeat(db, job.id, 1, lease_seconds=60)
    with pytest.raises(StaleAttempt):
        record_steps(db, job.id, 1, 7)
    with pytest.raises(StaleAttempt):
        finish_attempt(db, job.id, 1, "succeeded")
    assert finish_attempt(db, job.id, 2, "succeeded").status == "succeeded"


def test_attempts_are_capped_and_the_job_fails_with_the_reason(db):
    job = new_job(db)
    claim_job(db, job.id, "worker-1", lease_seconds=60, max_attempts=1)
    db.clock = lambda: time.time() + 61
    assert [j.status for j in requeue_lost_jobs(db, max_attempts=1)] == ["failed"]
    failed = get_job(db, job.id)
    assert (failed.status, failed.error_code) == ("failed", "worker_lost")
    assert failed.finished_at is not None


def test_a_cancelled_queued_job_never_starts(db):
    job = new_job(db)
    assert request_cancel(db, job.id, "key-a").status == "cancelled"
    assert claim_job(db, job.id, "worker-1", 60, 3) is None
    with pytest.raises(WrongState, match="it is cancelled"):
        request_cancel(db, job.id, "key-a")


def test_a_running_job_is_asked_to_cancel_or_pause_through_its_heartbeat(db):
    job = new_job(db)
    claim_job(db, job.id, "worker-1", 60, 3)
    request_pause(db, job.id, "key-a")
    assert heartbeat(db, job.id, 1, 60).pause
    request_cancel(db, job.id, "key-a")
    assert heartbeat(db, job.id, 1, 60).cancel


def test_pause_and_resume(db):
    job = new_job(db)
    claim_job(db, job.id, "worker-1", 60, 3)
    request_pause(db, job.id, "key-a")
    finish_attempt(db, job.id, 1, "paused")
    with pytest.raises(WrongState):
        request_pause(db, job.id, "key-a")
    assert requeue_paused(db, job.id, "key-a").status == "queued"
    assert claim_job(db, job.id, "worker-2", 60, 3) == 2
    with pytest.raises(WrongState, match="cannot resume .* it is running"):
        requeue_paused(db, job.id, "key-a")


def test_jobs_of_another_key_are_not_found(db):
    alice, alice_secret = create_key(db, "alice")
    bob, bob_secret = create_key(db, "bob")
    job = new_job(db, owner=alice)
    assert get_job(db, job.id, owner=bob) is None
    with pytest.raises(LookupError):
        request_cancel(db, job.id, bob)
    assert list_jobs(db, bob_secret, after=None, limit=10) == (bob, [], False)
    assert list_jobs(db, alice_secret, after=None, limit=10)[1][0].id == job.id
    assert history.list_events(db, bob_secret, job.id, after=None, limit=10) == (bob, None, False)
    assert history.list_events(db, alice_secret + "x", job.id, after=None, limit=10) == (None, None, False)
    assert list_jobs(db, alice_secret + "x", after=None, limit=10) == (None, [], False)


def test_jobs_list_newest_first_with_paging_and_metadata(db):
    owner, secret = create_key(db, "alice")
    jobs = [new_job(db, owner, metadata={"team": "a" if i % 2 else "b"}) for i in range(5)]
    _, page, more = list_jobs(db, secret, after=None, limit=2)
    assert [j.id for j in page] == [jobs[4].id, jobs[3].id] and more
    _, page, more = list_jobs(db, secret, after=page[-1].id, limit=10)
    assert [j.id for j in page] == [jobs[2].id, jobs[1].id, jobs[0].id] and not more
    _, filtered, _ = list_jobs(db, secret, after=None, limit=10, metadata={"team": "a"})
    assert [j.id for j in filtered] == [jobs[3].id, jobs[1].id]
    _, queued, _ = list_jobs(db, secret, after=None, limit=10, status="queued")
    assert len(queued) == 5 and list_jobs(db, secret, after=None, limit=10, status="running")[1:] == ([], False)
    assert queue_position(db, get_job(db, jobs[0].id)) == 1


def test_metrics_events_are_recorded_once_per_step_and_listed_newest_first(db):
    owner, secret = create_key(db, "alice")
    job = new_job(db, owner)
    claim_job(db, job.id, "worker-1", 60, 3)
    record_steps(db, job.id, 1, 1, 2)
    record_steps(db, job.id, 1, 1, 2, 3)  # the follower read a rewritten file from its start
    finish_attempt(db, job.id, 1, JobStatus.PAUSED, Note("note"))
    _, events, more = history.list_events(db, secret, job.id, after=None, limit=3)
    assert [e.message for e in events] == ["note", "Step 3", "Step 2"] and more
    _, rest, more = history.list_events(db, secret, job.id, after=events[-1].id, limit=10)
    assert [e.message for e in rest] == ["Step 1", "Fine-tuning job started (attempt 1)"] and not more
    _, everything, _ = history.list_events(db, secret, job.id, after="event-unknown", limit=10)
    assert [e.message for e in everything] == ["note", *(e.message for e in events[1:]), *(e.message for e in rest)]


def test_a_trainer_notice_read_again_by_a_new_attempt_is_recorded_once(db):
    job = new_job(db)
    notice = "Early stopping at step 4: the validation loss has not improved by more than 0 for 2 evaluations (best 1.2 at step 2)"
    claim_job(db, job.id, "worker-1", lease_seconds=60, max_attempts=3)
    record_report(db, job.id, 1, Report(message_events=[new_event(job.id, notice)]))
    db.clock = lambda: time.time() + 61  # its worker was lost after recording the notice
    requeue_lost_jobs(db, max_attempts=3)
    claim_job(db, job.id, "worker-2", lease_seconds=60, max_attempts=3)
    record_report(
        db, job.id, 2, Report(message_events=[new_event(job.id, notice), new_event(job.id, "Another notice")])
    )
    assert messages(db, job.id).count(notice) == 1 and "Another notice" in messages(db, job.id)


def test_checkpoints_are_unique_per_step_and_forgotten_when_pruned(db):
    job = new_job(db)
    claim_job(db, job.id, "worker-1", 60, 3)
    for steps in ((10, 20), (20, 30)):
        report = Report(
            checkpoints={step: (f"jobs/{job.id}/checkpoints/step-{step:06d}", None) for step in steps},
            on_disk={20, 30} if 30 in steps else None,
        )
        record_report(db, job.id, 1, report)
    rows, more = history.list_checkpoints(db, job.id)
    assert [row.step for row in rows] == [30, 20] and not more
    assert [m for m in messages(db, job.id) if m.startswith("Checkpoint")] == [
        "Checkpoint created at step 10",
        "Checkpoint created at step 20",
        "Checkpoint created at step 30",
    ]


def test_hand_backs_do_not_use_up_the_attempts_only_failures_do(db):
    job = new_job(db)
    for attempt in range(1, 5):  # paused or pre-empted four times
        assert claim_job(db, job.id, "worker", 60, max_attempts=2) == attempt
        finish_attempt(db, job.id, attempt, "queued")
    assert claim_job(db, job.id, "worker", 60, max_attempts=2) == 5
    finish_attempt(db, job.id, 5, "queued", failures=2, error_message="trainer crashed")
    assert claim_job(db, job.id, "worker", 60, max_attempts=2) is None
    failed = get_job(db, job.id)
    assert (failed.status, failed.error_code) == ("failed", "attempts_exhausted")
    assert "trainer crashed" in failed.error_message


def test_a_database_made_by_an_older_release_is_migrated_with_its_jobs(database_url):
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import text

    from lmtune.store.database import MIGRATIONS, Database

    old = Database(database_url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = old.engine
    command.upgrade(config, "0001")
    with old.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO jobs (id, owner, spec, gpus, queue, status, created_at, attempt, cancel_requested, "
                "pause_requested, step) VALUES ('ftjob-old', 'key-a', '{}', 0, 'cpu', 'queued', 1, 2, false, false, 0)"
            )
        )
    migrated = open_database(database_url)
    job = get_job(migrated, "ftjob-old")
    assert (job.attempt, job.failures, job.status) == (2, 0, "queued")


def test_a_burst_of_submissions_by_one_key_never_passes_its_job_quota(db):
    owner, secret = create_key(db, "burst")

    def submit(_):
        try:
            return new_job(db, owner, max_active=3).id
        except TooManyActiveJobs:
            return None

    with ThreadPoolExecutor(8) as pool:
        created = [job for job in pool.map(submit, range(16)) if job]
    _, jobs, _ = list_jobs(db, secret, after=None, limit=100)
    assert len(created) == 3 and sorted(created) == sorted(j.id for j in jobs if j.status in COUNTED_BY_QUOTA)


def test_an_attempt_continues_from_its_checkpoint_and_steps_past_it_are_recorded_once(db):
    job = new_job(db)
    claim_job(db, job.id, "worker-1", 60, 3)
    record_steps(db, job.id, 1, 1, 2, 3, 4, 5)  # killed after step 5, its checkpoint at step 3
    fail_attempt(db, job.id, 1, "the trainer was killed", max_attempts=3)
    claim_job(db, job.id, "worker-2", 60, 3)
    start_from_step(db, job.id, 2, 3)
    assert get_job(db, job.id).step == 3
    record_steps(db, job.id, 2, 1, 2, 3, 4, 5, 6)
    steps = [m for m in messages(db, job.id) if m.startswith("Step")]
    assert steps == ["Step 1", "Step 2", "Step 3", "Step 4", "Step 5", "Step 6"]
    with pytest.raises(StaleAttempt):
        start_from_step(db, job.id, 1, 0)


def test_a_status_change_and_its_event_are_one_write(db):
    job = new_job(db)
    claim_job(db, job.id, "worker-1", 60, 3)
    failed = fail_attempt(db, job.id, 1, "boom", max_attempts=1)
    assert (failed.status, failed.error_code, failed.failures) == ("failed", "trainer_crashed", 1)
    assert messages(db, job.id)[-1] == "Fine-tuning job failed: boom; it was the last of 1 failed attempts allowed"


def test_the_next_job_is_claimed_fairly_across_keys_and_a_repeat_claims_nothing(db):
    many = [new_job(db, owner="key-a") for _ in range(4)]
    single = new_job(db, owner="key-b")
    assert [queue_position(db, get_job(db, j.id)) for j in (*many, single)] == [1, 3, 4, 5, 2]
    first, _ = claim_next_job(db, "cpu", "worker-1", 60, 3)
    second, _ = claim_next_job(db, "cpu", "worker-2", 60, 3)
    assert (first.id, second.id) == (many[0].id, single.id)  # key-b's one job does not wait for key-a's four
    assert queue_position(db, get_job(db, many[1].id)) == 1
    assert queue_position(db, get_job(db, single.id)) is None
    for _ in range(3):
        claim_next_job(db, "cpu", "worker-3", 60, 3)
    assert claim_next_job(db, "cpu", "worker-4", 60, 3) is None  # a repeated message: nothing to run
    assert claim_next_job(db, "gpu-1", "worker-5", 60, 3) is None  # another shape's queue


def test_a_page_of_jobs_gets_each_queued_jobs_place_in_its_own_queue(db):
    owner, secret = create_key(db, "alice")
    cpu = [new_job(db, owner) for _ in range(3)]
    gpu = create_job(db, owner=owner, spec=SPEC, queue="gpu-1")
    claim_next_job(db, "cpu", "worker-1", 60, 3)  # cpu[0] runs: the key's queued cpu jobs wait a turn more
    _, page, _ = list_jobs(db, secret, after=None, limit=10)
    assert queue_positions(db, page) == {cpu[1].id: 1, cpu[2].id: 2, gpu.id: 1}
    assert queue_positions(db, [get_job(db, cpu[2].id)]) == {cpu[2].id: 2}  # a page's slice: places in the whole queue


def test_the_idempotency_key_returns_the_first_answer_and_refuses_another_body(db):
    from lmtune.store.idempotency import IdempotencyKey, KeyReused, earlier_answer, remember

    first = IdempotencyKey("key-a", "retry-1", "hash-1")
    assert earlier_answer(db, first) is None
    with db.session() as session:
        job = create_job(db, owner="key-a", spec=SPEC, queue="cpu", session=session)
        remember(session, first, job.id)
    assert earlier_answer(db, first) == job.id
    assert earlier_answer(db, IdempotencyKey("key-b", "retry-1", "hash-1")) is None  # keys are per API key
    with pytest.raises(KeyReused):
        earlier_answer(db, IdempotencyKey("key-a", "retry-1", "hash-2"))
