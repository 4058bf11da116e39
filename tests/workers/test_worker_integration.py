"""Jobs through real Redis, PostgreSQL and `lmtune worker` processes (no eager mode, no fakes)."""

import signal

import pytest

from lmtune.dispatch import send_job
from lmtune.store import history
from lmtune.store.fine_tuned import get_fine_tuned_model
from lmtune.store.jobs import request_cancel, request_pause, requeue_paused
from lmtune.store.models import Event
from tests.helpers import metric_rows
from tests.waiting import wait_for_exit

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.parametrize("database_url", ["postgresql"], indirect=True),
]


def events_of(deployment, job_id) -> list[Event]:
    """Newest first, as the API lists them."""
    return history.events_after_seq(deployment.db, job_id, 0)[::-1]


def test_a_job_runs_to_success_reporting_as_it_goes(deployment):
    job = deployment.submit()
    assert deployment.job(job.id).status == "queued"
    deployment.start_worker()

    running = deployment.wait_for(
        job.id,
        lambda j: j.status == "running" and history.list_checkpoints(deployment.db, j.id)[0],
        what="running with a checkpoint recorded",
    )
    assert 0 < running.step < running.total_steps and running.estimated_finish is not None
    assert any(e.type == "metrics" for e in events_of(deployment, job.id))

    done = deployment.wait_for(job.id, lambda j: j.status == "succeeded", what="succeeded")
    assert done.fine_tuned_model == f"ft:lmtune-tiny:{job.id}"
    assert done.step == done.total_steps == 40 and done.trained_tokens > 0
    assert done.hyperparameters["batch_size"] == 4 and done.attempt == 1
    assert get_fine_tuned_model(deployment.db, done.fine_tuned_model).path == f"jobs/{job.id}/final"
    metrics_events = [e for e in events_of(deployment, job.id) if e.type == "metrics"]
    assert sorted(e.data["step"] for e in metrics_events) == list(range(1, 41))
    assert metrics_events[0].message.startswith("Step 40/40: training loss=")
    checkpoints, _ = history.list_checkpoints(deployment.db, job.id)
    assert [c.step for c in checkpoints] == [40, 35, 30]  # keep_checkpoints: 3
    assert done.result_file_id and (deployment.settings.data_dir / "files" / f"{done.result_file_id}.csv").exists()


def test_cancel_of_a_queued_and_of_a_running_job(deployment):
    queued = deployment.submit()
    assert request_cancel(deployment.db, queued.id, "key-test").status == "cancelled"
    running = deployment.submit(epochs=40)
    deployment.start_worker()
    deployment.wait_for(running.id, lambda j: j.status == "running" and j.step > 0, what="running")
    request_cancel(deployment.db, running.id, "key-test")
    cancelled = deployment.wait_for(running.id, lambda j: j.status == "cancelled", what="cancelled")
    assert cancelled.step < cancelled.total_steps and cancelled.finished_at
    assert deployment.job(queued.id).attempt == 0  # never started


def test_pause_then_resume_ends_with_the_steps_of_an_uninterrupted_run(deployment):
    job = deployment.submit(epochs=10)
    deployment.start_worker()
    deployment.wait_for(job.id, lambda j: j.status == "running" and j.step >= 3, what="running")
    request_pause(deployment.db, job.id, "key-test")
    paused = deployment.wait_for(job.id, lambda j: j.status == "paused", what="paused")
    assert 3 <= paused.step < 100
    assert history.list_checkpoints(deployment.db, job.id)[0][0].step == paused.step

    requeue_paused(deployment.db, job.id, "key-test")
    send_job(deployment.settings, deployment.job(job.id))
    done = deployment.wait_for(job.id, lambda j: j.status == "succeeded", what="succeeded")
    assert done.step == done.total_steps == 100
    assert [row["step"] for row in metric_rows(deployment.settings.data_dir / "jobs" / job.id)] == list(range(1, 101))


def test_a_killed_worker_s_job_continues_on_a_new_worker_and_succeeds_once(deployment):
    job = deployment.submit(epochs=10)
    first = deployment.start_worker()
    deployment.wait_for(job.id, lambda j: history.list_checkpoints(deployment.db, j.id)[0], what="a checkpoint")
    first.send_signal(signal.SIGKILL)
    first.wait()
    deployment.start_worker()

    done = deployment.wait_for(job.id, lambda j: j.status == "succeeded", what="succeeded")
    assert done.attempt == 2
    messages = [e.message for e in events_of(deployment, job.id)]
    assert messages.count("The job has successfully completed") == 1
    assert any("was lost" in m for m in messages)
    assert [row["step"] for row in metric_rows(deployment.settings.data_dir / "jobs" / job.id)] == list(range(1, 101))


def test_the_same_job_delivered_twice_runs_once(deployment):
    job = deployment.submit()
    send_job(deployment.settings, job)  # a second message for the same job
    deployment.start_worker()
    deployment.start_worker()
    done = deployment.wait_for(job.id, lambda j: j.status == "succeeded", what="succeeded")
    assert done.attempt == 1
    messages = [e.message for e in events_of(deployment, job.id)]
    assert messages.count("Fine-tuning job started (attempt 1)") == 1
    assert messages.count("The job has successfully completed") == 1


def test_a_diverging_job_fails_with_a_code_and_a_message_to_act_on(deployment):
    job = deployment.submit(epochs=20, learning_rate=1e5, max_grad_norm=None)
    deployment.start_worker()
    failed = deployment.wait_for(job.id, lambda j: j.status in ("failed", "succeeded"), what="an end")
    assert (failed.status, failed.error_code) == ("failed", "training_diverged")
    assert "Lower the learning rate" in failed.error_message and failed.attempt == 1  # final: not retried
    assert events_of(deployment, job.id)[0].level == "error"


def test_a_worker_asked_to_stop_hands_its_job_back_and_another_finishes_it(deployment):
    job = deployment.submit(epochs=10)
    first = deployment.start_worker()
    deployment.wait_for(job.id, lambda j: j.status == "running" and j.step >= 3, what="running")
    first.send_signal(signal.SIGTERM)  # docker stop, pre-emption
    assert wait_for_exit(first, "the worker to hand its job back and exit") == 0
    handed_back = deployment.job(job.id)
    assert handed_back.status == "queued" and 3 <= handed_back.step < 100
    assert history.list_checkpoints(deployment.db, job.id)[0][0].step == handed_back.step

    deployment.start_worker()
    done = deployment.wait_for(job.id, lambda j: j.status == "succeeded", what="succeeded")
    assert done.attempt == 2
    assert [row["step"] for row in metric_rows(deployment.settings.data_dir / "jobs" / job.id)] == list(range(1, 101))
