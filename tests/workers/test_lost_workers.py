"""A worker presumed lost (its lease lapsed) loses its job to the sweep of another worker: the job is
queued again (or ended), the lost attempt writes nothing more, and the folder of a job the sweep
ended is cut back to what the job's records say. The lapse is the sweeper's clock moved on; the
trainer is a stand-in process keeping the trainer's contract (stand_in_trainer.py)."""

import json
import os
import subprocess
import sys
import time

from lmtune.fence import ATTEMPT_ENV, claim_run_folder
from lmtune.layout import DataLayout
from lmtune.store.database import Database
from lmtune.store.jobs import claim_next_job, queue_name
from tests.workers import worker_turns as turns
from workers.celery_worker import requeue_lost


def sweep_an_hour_later(api) -> None:
    """Another worker's sweep, seeing every lease lapsed."""
    later = Database(api.settings.database_url, clock=lambda: time.time() + 3600)
    try:
        requeue_lost(turns.make_worker(api, name="sweeper", db=later).context)
    finally:
        later.engine.dispose()


def test_a_lost_worker_s_job_is_queued_again_its_attempt_stops_and_the_next_resumes(worker_api):
    api = worker_api
    job_id, _, turn = turns.running_job(api, {"steps": 2, "checkpoints": [2], "end": "wait"})
    sweep_an_hour_later(api)
    turns.ended(turn)  # the lost attempt gave up by itself, recording nothing more

    queued = turns.job(api, job_id)
    assert (queued["status"], queued["attempt"]) == ("queued", 1)
    assert (
        turns.messages(api, job_id)[-1] == "The worker running this job was lost; it continues from its last checkpoint"
    )
    assert api.queue.sent == [job_id, job_id]  # the sweep sent it again

    turns.make_worker(api, turns.SUCCEED, name="worker-b").turn()
    done = turns.job(api, job_id)
    assert (done["status"], done["attempt"]) == ("succeeded", 2)
    assert turns.metric_steps(api, job_id) == [1, 2, 3, 4]


def test_a_job_the_sweep_ends_keeps_only_what_its_records_say(worker_api):
    api = worker_api
    job_id = turns.submit(api)
    turns.make_worker(api, {"steps": 2, "checkpoints": [2], "end": {"exit": 1}}).turn()  # a crash: step 2 recorded
    data = DataLayout(api.settings.data_dir)
    run = data.job(job_id)

    # a worker claims attempt 2, starts its trainer and is cut off; the orphan trainer finishes alone
    _, attempt = claim_next_job(api.client.app.state.db, queue_name(0, api.settings.queue_prefix), "worker-lost", 60, 3)
    claim_run_folder(run, attempt)
    orphan = [sys.executable, str(turns.STAND_IN), json.dumps({"steps": 4, "checkpoints": [3, 4], "end": "succeed"})]
    subprocess.run(
        [*orphan, str(data.trainer_spec(job_id)), "--output", str(run.root)],
        env={**os.environ, ATTEMPT_ENV: str(attempt)},
        check=True,
    )
    assert api.client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel", headers=api.alice).status_code == 200
    sweep_an_hour_later(api)

    cancelled = turns.job(api, job_id)
    assert cancelled["status"] == "cancelled" and cancelled["fine_tuned_model"] is None
    rows = api.client.get(f"/v1/fine_tuning/jobs/{job_id}/metrics", headers=api.alice).json()["data"]
    assert [row["step"] for row in rows] == [1, 2]  # the orphan's steps 3 and 4 are gone from the run folder
    assert turns.checkpoint_steps(api, job_id) == [2]
    assert sorted(path.name for path in run.checkpoints.iterdir()) == ["step-000002"]
    assert not run.final.exists() and not run.result.exists()  # no model of a job that did not succeed
    assert api.queue.sent == [job_id, job_id]  # the crash's retry; nothing for a job that ended
