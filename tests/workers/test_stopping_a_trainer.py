"""A running trainer stopped by its owner (cancel, pause) or by its worker's shutdown: SIGTERM, a
checkpoint, and the job's new status; a trainer deaf to SIGTERM is killed after the grace period.
The trainer is a stand-in process keeping the trainer's contract (stand_in_trainer.py)."""

import pytest

from tests.workers.worker_turns import (
    checkpoint_steps,
    ended,
    job,
    make_worker,
    messages,
    metric_steps,
    running_job,
)

RUNNING = {"steps": 2, "checkpoints": [1], "end": "wait"}  # two steps, then waits for SIGTERM
DEAF = {"steps": 2, "checkpoints": [1], "end": "ignore_term"}


def act(api, job_id: str, action: str) -> dict:
    answer = api.client.post(f"/v1/fine_tuning/jobs/{job_id}/{action}", headers=api.alice)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a_paused_job_keeps_its_checkpoint_and_a_resume_continues_from_it(worker_api):
    api = worker_api
    job_id, worker, turn = running_job(api, RUNNING)
    act(api, job_id, "pause")
    ended(turn)

    paused = job(api, job_id)
    assert paused["status"] == "paused" and paused["finished_at"] is None
    assert messages(api, job_id)[-1] == "Fine-tuning job paused at step 2; resume continues from there"
    assert checkpoint_steps(api, job_id) == [1, 2]  # the stand-in saved step 2 on SIGTERM, as the trainer does
    assert api.queue.sent == [job_id]  # a pause waits for its owner: nothing is sent

    assert act(api, job_id, "resume")["status"] == "queued"
    worker.plan = {"steps": 4, "checkpoints": [4], "end": "succeed"}
    worker.turn()
    done = job(api, job_id)
    assert (done["status"], done["attempt"]) == ("succeeded", 2)
    assert metric_steps(api, job_id) == [1, 2, 3, 4]


@pytest.mark.parametrize("plan, grace", [(RUNNING, 5), (DEAF, 0)], ids=["stops-on-sigterm", "killed-after-grace"])
def test_a_cancelled_job_s_trainer_stops_and_the_job_ends_cancelled(make_worker_api, plan, grace):
    api = make_worker_api(cancel_grace_seconds=grace)
    job_id, _, turn = running_job(api, plan)
    act(api, job_id, "cancel")
    ended(turn)
    cancelled = job(api, job_id)
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"] is not None
    assert cancelled["fine_tuned_model"] is None and cancelled["progress"]["step"] == 2
    assert messages(api, job_id)[-1] == "Fine-tuning job cancelled"


def test_a_pause_whose_trainer_does_not_stop_in_time_kills_it_and_keeps_the_last_checkpoint(make_worker_api):
    api = make_worker_api(pause_grace_seconds=0)
    job_id, _, turn = running_job(api, DEAF)
    act(api, job_id, "pause")
    ended(turn)
    assert job(api, job_id)["status"] == "paused"
    assert checkpoint_steps(api, job_id) == [1]  # killed before it saved step 2: a resume starts after step 1


def test_a_worker_shutting_down_hands_its_job_back_without_counting_a_failure(make_worker_api):
    api = make_worker_api(max_attempts=1)  # had the hand-back been a failure, no attempt would be left
    job_id, worker, turn = running_job(api, RUNNING)
    worker.context.shutting_down.set()  # SIGTERM to the worker (docker stop, a pre-emption)
    ended(turn)

    handed_back = job(api, job_id)
    assert (handed_back["status"], handed_back["attempt"]) == ("queued", 1)
    assert messages(api, job_id)[-1] == (
        "The worker is shutting down; the job is queued again and continues from step 2"
    )
    assert api.queue.sent == [job_id, job_id]  # sent again, for another worker
    worker.turn()  # a doorbell reaching the stopping worker: it takes nothing
    assert job(api, job_id)["attempt"] == 1

    make_worker(api, {"steps": 3, "end": "succeed"}, name="worker-b").turn()
    done = job(api, job_id)
    assert (done["status"], done["attempt"]) == ("succeeded", 2)
    assert metric_steps(api, job_id) == [1, 2, 3]
