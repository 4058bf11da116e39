"""The job list and job retrieve send plain values with no model built per job (for speed): what they
send is exactly the job object the other routes answer with, for a job in every state."""

import sqlite3

import pytest

from lmtune.store import history
from lmtune.store.jobs import claim_job, fail_attempt, finish_attempt
from lmtune.store.models import JobStatus
from service.schemas import FineTuningJob
from tests.service.conftest import running_api
from tests.service.test_api_errors import create_job


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_listed_and_retrieved_jobs_are_the_job_object_in_every_state(tmp_path, database_url):
    with running_api(tmp_path, database_url=database_url, quota_active_jobs=10) as api:
        db = api.client.app.state.db
        created = {
            state: create_job(api, api.alice, metadata={"state": state}, suffix=state).json()
            for state in ("queued", "running", "failed", "succeeded", "cancelled")
        }
        answered = {"queued": created["queued"]}
        answered["cancelled"] = api.client.post(
            f"/v1/fine_tuning/jobs/{created['cancelled']['id']}/cancel", headers=api.alice
        ).json()
        attempts = {state: claim_job(db, created[state]["id"], "worker", 60, 3) for state in ("running", "failed")}
        attempts["succeeded"] = claim_job(db, created["succeeded"]["id"], "worker", 60, 3)
        progress = {
            "step": 3,
            "total_steps": 9,
            "trained_tokens": 120,
            "estimated_finish": 2_000_000_000,
            "latest_metrics": {"step": 3, "train_loss": 1.25, "learning_rate": 3e-3},
            "hyperparameters": {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 1.0},
        }
        history.record_report(db, created["running"]["id"], attempts["running"], history.Report(progress=progress))
        fail_attempt(db, created["failed"]["id"], attempts["failed"], "the trainer ran out of memory", 1, "oom")
        finish_attempt(db, created["succeeded"]["id"], attempts["succeeded"], "succeeded", fine_tuned_model="ft:x")

        listed = api.client.get("/v1/fine_tuning/jobs", headers=api.alice).json()
        assert listed["object"] == "list" and listed["has_more"] is False
        by_state = {job["metadata"]["state"]: job for job in listed["data"]}
        assert {state: job["status"] for state, job in by_state.items()} == {
            "queued": "queued",
            "running": "running",
            "failed": "failed",
            "succeeded": "succeeded",
            "cancelled": "cancelled",
        }
        for status in JobStatus:  # the filter keeps the jobs in that status, and answers for every status
            kept = api.client.get("/v1/fine_tuning/jobs", headers=api.alice, params={"status": status}).json()
            assert [job["id"] for job in kept["data"]] == [
                job["id"] for job in by_state.values() if job["status"] == status
            ]
        # OpenAI's status for a job whose files are being checked: its SDK may ask; no lmtune job is in it
        answer = api.client.get("/v1/fine_tuning/jobs", headers=api.alice, params={"status": "validating_files"})
        assert answer.status_code == 200 and answer.json()["data"] == []
        for state, job in by_state.items():
            retrieved = api.client.get(f"/v1/fine_tuning/jobs/{job['id']}", headers=api.alice).json()
            assert retrieved == job
            assert FineTuningJob.model_validate(job).model_dump(mode="json") == job  # every field, nothing more
            if state in answered:  # as the routes that build the model answered
                assert answered[state] == job
        running = by_state["running"]
        assert running["progress"] == {"step": 3, "total_steps": 9} and running["metrics"]["train_loss"] == 1.25
        assert running["estimated_finish"] == 2_000_000_000 and running["hyperparameters"]["batch_size"] == 4
        assert by_state["failed"]["error"] == {
            "code": "oom",
            "message": "the trainer ran out of memory; it was the last of 1 failed attempts allowed",
            "param": None,
        }
        assert by_state["queued"]["queue_position"] == 1 and by_state["succeeded"]["fine_tuned_model"] == "ft:x"


def test_reads_answer_at_once_while_a_writer_holds_the_sqlite_database(api):
    """On SQLite the API reads on its event loop (service.deps.Reads): a worker's open write must
    not hold them up, or the whole API would wait with it (up to the 30 s busy timeout)."""
    job = create_job(api, api.alice).json()
    writer = sqlite3.connect(api.client.app.state.db.engine.url.database, timeout=0)
    try:
        writer.execute("BEGIN EXCLUSIVE")  # the strongest lock a writer takes (a worker, as it commits)
        writer.execute("UPDATE jobs SET step = 7 WHERE id = ?", (job["id"],))
        retrieved = api.client.get(f"/v1/fine_tuning/jobs/{job['id']}", headers=api.alice)
        listed = api.client.get("/v1/fine_tuning/jobs", headers=api.alice)
        events = api.client.get(f"/v1/fine_tuning/jobs/{job['id']}/events", headers=api.alice)
    finally:
        writer.rollback()
        writer.close()
    assert (retrieved.status_code, listed.status_code, events.status_code) == (200, 200, 200)
    assert retrieved.json()["progress"]["step"] == 0  # the write in flight is not seen
    assert [listed_job["id"] for listed_job in listed.json()["data"]] == [job["id"]]
