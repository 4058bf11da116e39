"""Eval runs are fenced like jobs: claimed once, a cancel honoured between batches, a lost worker's
run retried by a new attempt that grades only the items left, a superseded attempt writing nothing."""

import time

import pytest

from lmtune.store import evals as eval_store
from lmtune.store.leases import StaleAttempt
from tests.service.conftest import running_api
from tests.service.test_evals_api import ROWS, make_eval, sdk
from tests.waiting import wait_while_progressing
from workers import eval_runner
from workers.eval_runner import run_next_eval
from workers.job_runner import WorkerContext
from workers.lease_keeper import LeaseKeeper

pytestmark = pytest.mark.filterwarnings("ignore:The Evals API is deprecated:DeprecationWarning")


@pytest.fixture
def setup(tmp_path):
    with running_api(tmp_path) as api:
        yield prepare(api)


def prepare(api):
    client = sdk(api, api.alice)
    evaluation = make_eval(client)
    db = api.client.app.state.db
    context = WorkerContext(api.settings, db, "worker-a", 0, api.queue)
    queue = eval_store.eval_run_queue(api.settings.queue_prefix)

    def start(rows=ROWS):
        source = {"type": "jsonl", "source": {"type": "file_content", "content": rows}}
        return client.evals.runs.create(evaluation.id, data_source=source)

    def status(run):
        return client.evals.runs.retrieve(run.id, eval_id=evaluation.id)

    return api, db, context, queue, start, status


def test_a_run_is_claimed_by_one_worker_only(setup):
    api, db, context, queue, start, status = setup
    run = start()
    claimed = eval_store.claim_next_run(db, queue, "worker-a", 60, 3)
    assert claimed is not None and claimed[0].id == run.id and claimed[1] == 1
    assert eval_store.claim_next_run(db, queue, "worker-b", 60, 3) is None
    run_next_eval(context, queue)  # a repeated message finds nothing to run
    assert status(run).status == "in_progress"


def test_a_cancel_is_honoured_at_the_next_batch(setup, monkeypatch):
    api, db, context, queue, start, status = setup
    monkeypatch.setattr(eval_runner, "BATCH", 1)
    run = start()
    run_row, attempt = eval_store.claim_next_run(db, queue, "worker-a", 60, 3)
    eval_store.cancel_run(db, run.id, run_row.eval_id, run_row.owner)  # asked while it runs
    with LeaseKeeper(db, run.id, attempt, 60, beat=eval_store.heartbeat) as lease:
        eval_runner._Run(context, run_row, attempt, lease).execute()
    ended = status(run)
    assert ended.status == "canceled" and ended.result_counts.total == 1  # one batch, then it stopped


def test_a_lost_workers_run_is_retried_and_grades_only_the_items_left(setup, monkeypatch):
    api, db, context, queue, start, status = setup
    monkeypatch.setattr(eval_runner, "BATCH", 1)
    run = start()
    save = eval_store.save_items

    def save_then_die(*args):
        save(*args)
        raise SystemExit("the worker process dies after its first batch")

    monkeypatch.setattr(eval_store, "save_items", save_then_die)
    with pytest.raises(SystemExit):
        run_next_eval(context, queue)
    monkeypatch.setattr(eval_store, "save_items", save)
    first = eval_store.output_items_of(db, run.id)
    assert [i.datasource_item_id for i in first] == [0] and status(run).status == "in_progress"
    # its lease lapses and a sweep queues the run again
    db.clock = lambda: time.time() + 3600
    assert [r.id for r in eval_store.requeue_lost_runs(db, 3)] == [run.id]
    db.clock = time.time
    run_next_eval(context, queue)
    ended = status(run)
    assert ended.status == "completed" and ended.result_counts.total == 3 and ended.result_counts.passed == 1
    stored = eval_store.output_items_of(db, run.id)
    assert sorted(i.datasource_item_id for i in stored) == [0, 1, 2] and stored[0].id == first[0].id
    with pytest.raises(StaleAttempt):  # the first attempt, were it still alive, may write nothing
        eval_store.save_items(db, run.id, 1, [], {})


def test_a_run_whose_attempts_keep_crashing_fails_with_the_reason(setup, monkeypatch):
    api, db, context, queue, start, status = setup
    run = start()

    def crash(self):
        raise RuntimeError("the worker ran out of something")

    monkeypatch.setattr(eval_runner._Run, "execute", crash)
    for _ in range(api.settings.max_attempts):
        run_next_eval(context, queue)
    ended = status(run)
    assert ended.status == "failed" and "ran out of something" in ended.error.message


def test_one_keys_many_runs_do_not_starve_another_keys_run(setup):
    api, db, context, queue, start, status = setup
    runs = [start() for _ in range(3)]
    bob = sdk(api, api.bob)
    bob_eval = make_eval(bob)
    bob_run = bob.evals.runs.create(
        bob_eval.id, data_source={"type": "jsonl", "source": {"type": "file_content", "content": ROWS}}
    )
    first, _ = eval_store.claim_next_run(db, queue, "w", 60, 3)
    second, _ = eval_store.claim_next_run(db, queue, "w", 60, 3)
    assert (first.id, second.id) == (runs[0].id, bob_run.id)


def test_the_lease_keeper_stops_a_superseded_run(setup):
    api, db, context, queue, start, status = setup
    run = start()
    _, attempt = eval_store.claim_next_run(db, queue, "worker-a", 1, 3)
    db.clock = lambda: time.time() + 3600
    eval_store.requeue_lost_runs(db, 3)
    db.clock = time.time
    with LeaseKeeper(db, run.id, attempt, 1, beat=eval_store.heartbeat) as lease:
        wait_while_progressing(lambda: lease.stale, bool, what="the lease keeper to see the run taken back")
        with pytest.raises(StaleAttempt):
            lease.check()
