"""Gangs of workers for multi-node jobs, on SQLite and on PostgreSQL: all of them or none."""

import pytest

from lmtune.store.gangs import disband, gang_members, host_gang, join_gang, still_held
from lmtune.store.jobs import JobStatus, StaleAttempt, claim_next_job, create_job, get_job
from tests.helpers import BOTH_DATABASES

pytestmark = pytest.mark.parametrize("database_url", BOTH_DATABASES, indirect=True)

SPEC = {"model": "lmtune-tiny", "training_file": "file-abc"}


def claimed_gang_job(db, nodes: int = 3):
    create_job(db, owner="key-a", spec=SPEC, queue="cpu", nodes=nodes)
    job, attempt = claim_next_job(db, "cpu", "host-a:1", 60, 3)
    return job, attempt


def test_workers_join_a_hosted_gang_in_rank_order_until_it_is_full(db):
    job, attempt = claimed_gang_job(db, nodes=3)
    assert join_gang(db, "cpu", "host-b:1") is None  # not hosted yet: its inputs are not ready
    host_gang(db, job.id, attempt, "host-a:1", "10.0.0.1:29500")
    assert join_gang(db, "cpu", "host-a:1") is None  # rank 0 is in it already
    assert join_gang(db, "other", "host-b:1") is None  # another queue's workers do not join
    joined = [join_gang(db, "cpu", worker) for worker in ("host-b:1", "host-c:1", "host-d:1")]
    assert [(j.id, a, rank) for j, a, rank in joined[:2]] == [(job.id, attempt, 1), (job.id, attempt, 2)]
    assert joined[2] is None  # full
    members = gang_members(db, job.id, attempt)
    assert [(m.rank, m.worker) for m in members] == [(0, "host-a:1"), (1, "host-b:1"), (2, "host-c:1")]
    assert members[0].address == "10.0.0.1:29500"


def test_a_gang_not_full_in_time_hands_the_job_back_without_a_failure_and_its_members_leave(db):
    job, attempt = claimed_gang_job(db, nodes=3)
    host_gang(db, job.id, attempt, "host-a:1", "10.0.0.1:29500")
    join_gang(db, "cpu", "host-b:1")
    still_held(db, job.id, attempt, 60)
    back = disband(db, job.id, attempt, joined=2, waited=300)
    assert (back.status, back.failures) == (JobStatus.QUEUED, 0)
    with pytest.raises(StaleAttempt):
        still_held(db, job.id, attempt, 60)  # the member sees its attempt gone and stops
    # the next attempt's gang starts empty: the old members are not in it
    job2, attempt2 = claim_next_job(db, "cpu", "host-c:1", 60, 3)
    host_gang(db, job2.id, attempt2, "host-c:1", "10.0.0.3:29500")
    assert [m.worker for m in gang_members(db, job.id, attempt2)] == ["host-c:1"]
    assert get_job(db, job.id).nodes == 3
