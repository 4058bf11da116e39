"""A process stalled inside a transaction (SIGSTOP, a paused VM, a partition) holds row locks until
PostgreSQL cuts it off: neither the sweep nor a cancel may wait on it."""

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import create_engine
from sqlalchemy.exc import DBAPIError

from lmtune.store.database import LOCK_TIMEOUT_SECONDS, is_unreachable
from lmtune.store.jobs import claim_job, create_job, get_job, request_cancel, requeue_lost_jobs
from tests.helpers import POSTGRESQL

pytestmark = pytest.mark.parametrize("database_url", [POSTGRESQL], indirect=True)


def new_job(db):
    return create_job(db, owner="key-a", spec={"model": "lmtune-tiny", "training_file": "file-abc"}, queue="cpu")


def test_a_stalled_transaction_holding_a_lost_job_does_not_hold_up_the_sweep_of_another(db, database_url):
    stuck, lost = new_job(db), new_job(db)
    for job in (stuck, lost):
        claim_job(db, job.id, "worker-1", lease_seconds=60, max_attempts=3)
    db.clock = lambda: time.time() + 61  # both workers fell silent past their leases
    # a worker stopped (SIGSTOP, a paused VM) inside a transaction that locked its job's row; a bare
    # connection, without lmtune's timeouts, so that only the sweep's SKIP LOCKED can get past it
    bare = create_engine(database_url)
    with bare.connect() as stalled:
        stalled.exec_driver_sql("BEGIN")
        stalled.exec_driver_sql(f"SELECT 1 FROM jobs WHERE id = '{stuck.id}' FOR UPDATE")
        started = time.monotonic()
        swept = requeue_lost_jobs(db, max_attempts=3)
        assert time.monotonic() - started < LOCK_TIMEOUT_SECONDS  # it did not wait on the lock
        assert [job.id for job in swept] == [lost.id] and get_job(db, lost.id).status == "queued"
        stalled.exec_driver_sql("ROLLBACK")
    bare.dispose()
    assert [job.id for job in requeue_lost_jobs(db, max_attempts=3)] == [stuck.id]  # the next sweep


def test_a_session_stalled_in_its_transaction_is_cut_off_and_a_cancel_waiting_on_it_goes_through(db):
    job = new_job(db)
    claim_job(db, job.id, "worker-1", lease_seconds=60, max_attempts=3)
    stalled = db.engine.connect()  # lmtune's own connection, as a worker's progress poll holds one
    stalled.exec_driver_sql("BEGIN")
    stalled.exec_driver_sql(f"SELECT 1 FROM jobs WHERE id = '{job.id}' FOR UPDATE")
    with ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        cancel = pool.submit(request_cancel, db, job.id, "key-a")
        assert cancel.result(timeout=LOCK_TIMEOUT_SECONDS + 30).cancel_requested  # the server cut the stalled one off
        waited = time.monotonic() - started
    assert waited < LOCK_TIMEOUT_SECONDS  # released by the idle-in-transaction timeout, before any lock wait gives up
    with pytest.raises(DBAPIError) as cut_off:  # the stalled process, woken, finds its session gone
        stalled.exec_driver_sql("SELECT 1")
    assert is_unreachable(cut_off.value)  # ... and treats it as an outage to retry, never as a failed job
    stalled.invalidate()
    stalled.close()
