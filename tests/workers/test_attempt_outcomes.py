"""How a worker ends an attempt, as the job's owner sees it through the API: every way a trainer
can end (finished, failed with a report, crashed, out of disk), and inputs gone before it started.
The trainer is a stand-in process keeping the trainer's contract (stand_in_trainer.py)."""

import csv
import io

import psutil
import pytest

from lmtune.layout import DataLayout
from tests.service.conftest import GOOD_FILE
from tests.service.test_training_eval_route import make_eval
from tests.waiting import wait_while_progressing
from tests.workers.worker_turns import (
    SUCCEED,
    checkpoint_steps,
    events,
    job,
    make_worker,
    messages,
    metric_steps,
    run_one_job,
    submit,
)
from workers.training.entry import OUT_OF_MEMORY
from workers.training.errors import EXIT_DISK_FULL


def test_a_finished_run_gives_the_fine_tuned_model_its_results_and_every_step_once(worker_api):
    api = worker_api
    job_id = submit(api)
    worker = make_worker(api, {**SUCCEED, "notices": [3]})
    worker.turn()
    worker.turn()  # the same message delivered again: nothing is left to claim, nothing runs twice

    done = job(api, job_id)
    assert done["status"] == "succeeded" and done["attempt"] == 1
    assert done["fine_tuned_model"] == f"ft:lmtune-tiny:{job_id}"
    assert done["trained_tokens"] == 400 and done["progress"] == {"step": 4, "total_steps": 4}
    assert metric_steps(api, job_id) == [1, 2, 3, 4]
    assert checkpoint_steps(api, job_id) == [2, 4]
    said = messages(api, job_id)
    assert "Fine-tuning job started (attempt 1)" in said
    assert "a notice at step 3" in said
    assert any(message.startswith("Samples at step 4: 1 answers") for message in said)
    assert said[-2:] == [f"New fine-tuned model created: ft:lmtune-tiny:{job_id}", "The job has successfully completed"]

    [results_id] = done["result_files"]
    results = api.client.get(f"/v1/files/{results_id}/content", headers=api.alice).text
    rows = list(csv.DictReader(io.StringIO(results)))
    assert [row["step"] for row in rows] == ["1", "2", "3", "4"] and rows[0]["train_loss"] == "2.0"
    models = api.client.get("/v1/models", headers=api.alice).json()["data"]
    assert f"ft:lmtune-tiny:{job_id}" in {model["id"] for model in models}
    assert api.queue.sent == [job_id]  # sent once, by the API: nothing handed back


@pytest.mark.parametrize(
    "report, param",
    [
        ({"report": "invalid_training_file", "message": "line 3: 'messages' must be a list"}, "training_file"),
        ({"report": "out_of_memory", "message": OUT_OF_MEMORY}, None),
    ],
    ids=["bad-data", "out-of-memory"],
)
def test_a_reported_failure_ends_the_job_with_its_code_and_the_field_to_change(worker_api, report, param):
    api = worker_api
    job_id = run_one_job(api, {"steps": 2, "end": report})

    failed = job(api, job_id)
    assert failed["status"] == "failed" and failed["attempt"] == 1
    assert failed["error"] == {"code": report["report"], "message": report["message"], "param": param}
    last = events(api, job_id)[-1]
    assert (last["level"], last["message"]) == ("error", f"Fine-tuning job failed: {report['message']}")
    assert api.queue.sent == [job_id]  # not retried: the same inputs would fail the same way


def test_a_crash_is_retried_from_the_last_checkpoint_and_each_step_is_recorded_once(worker_api):
    api = worker_api
    job_id = submit(api)
    worker = make_worker(api, {"steps": 3, "checkpoints": [2], "end": {"exit": 1}})
    worker.turn()

    retried = job(api, job_id)
    assert (retried["status"], retried["attempt"]) == ("queued", 1)
    assert messages(api, job_id)[-1] == (
        f"Attempt 1 failed: the trainer exited with status 1 (jobs/{job_id}/trainer.log has its output); "
        "retrying from the last checkpoint"
    )
    assert api.queue.sent == [job_id, job_id]  # sent again for the next attempt

    worker.plan = SUCCEED
    worker.turn()
    done = job(api, job_id)
    assert (done["status"], done["attempt"]) == ("succeeded", 2)
    assert metric_steps(api, job_id) == [1, 2, 3, 4]  # step 3 of attempt 1 was dropped, then trained again


def test_a_job_whose_attempts_all_crash_fails_naming_the_last_crash(worker_api):
    api = worker_api
    job_id = submit(api)
    worker = make_worker(api, {"steps": 1, "end": {"exit": 3}})
    for _ in range(3):  # LMTUNE_MAX_ATTEMPTS
        worker.turn()
    failed = job(api, job_id)
    assert (failed["status"], failed["attempt"]) == ("failed", 3)
    assert failed["error"]["code"] == "trainer_crashed"
    assert failed["error"]["message"] == (
        f"the trainer exited with status 3 (jobs/{job_id}/trainer.log has its output); "
        "it was the last of 3 failed attempts allowed"
    )
    assert api.queue.sent == [job_id] * 3  # created, then two retries; not after the last


@pytest.mark.parametrize(
    "end, said",
    [
        (
            {"report": "disk_full", "message": "the disk is full: writing a checkpoint needs at least 2.0 MiB"},
            "the disk is full: writing a checkpoint needs at least 2.0 MiB",
        ),
        ({"exit": EXIT_DISK_FULL}, "the disk is full: writing the trainer's error report needs at least 1 B"),
    ],
    ids=["reported", "not-even-the-report-fitted"],
)
def test_a_full_disk_is_retried_as_disk_full_after_its_back_off(worker_api, end, said):
    api = worker_api
    job_id = run_one_job(api, {"steps": 1, "end": end})
    retried = job(api, job_id)
    assert (retried["status"], retried["attempt"]) == ("queued", 1)
    assert messages(api, job_id)[-1].startswith(f"Attempt 1 failed: {said}")
    assert "the next attempt waited 0 s for space; retrying from the last checkpoint" in messages(api, job_id)[-1]
    assert api.queue.sent == [job_id, job_id]


def test_a_cancel_during_the_full_disk_back_off_ends_the_job(make_worker_api):
    api = make_worker_api(disk_full_backoff_seconds=3600)
    job_id = submit(api)
    worker = make_worker(api, {"steps": 1, "end": {"report": "disk_full", "message": "the disk is full"}})
    turn = worker.turn_in_background()
    wait_for_back_off(api, job_id)
    assert api.client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel", headers=api.alice).status_code == 200
    turn.join()
    assert job(api, job_id)["status"] == "cancelled"
    assert messages(api, job_id)[-1] == "Fine-tuning job cancelled"


def wait_for_back_off(api, job_id):
    """Until the stand-in has reported the full disk and the worker has reaped it: the worker is in its back-off."""
    data = DataLayout(api.settings.data_dir)
    log = data.trainer_log(job_id)
    wait_while_progressing(
        lambda: data.job(job_id).error.exists() and log.exists(),
        bool,
        what="the trainer to report a full disk",
        interval=0.05,
    )
    pid = int(log.read_text().splitlines()[0].rsplit(" ", 1)[1])  # "stand-in trainer, pid N"
    wait_while_progressing(lambda: psutil.pid_exists(pid), lambda alive: not alive, what="the worker to reap it")


def test_a_training_file_deleted_before_the_job_started_fails_it_naming_the_file(worker_api):
    api = worker_api
    job_id = submit(api)
    file_id = job(api, job_id)["training_file"]
    assert api.client.delete(f"/v1/files/{file_id}", headers=api.alice).status_code == 200
    make_worker(api).turn()
    assert job(api, job_id)["error"] == {
        "code": "file_not_found",
        "message": f"training_file {file_id} no longer exists",
        "param": "training_file",
    }


def test_a_job_trains_from_a_fine_tuned_model_s_folder_and_fails_once_that_model_is_deleted(worker_api):
    api = worker_api
    worker = make_worker(api)
    first = submit(api)
    worker.turn()
    model = job(api, first)["fine_tuned_model"]
    second = submit(api, model=model)
    worker.turn()  # the stand-in fails if the model it is handed is not there
    assert job(api, second)["status"] == "succeeded"

    third = submit(api, model=model)
    assert api.client.delete(f"/v1/models/{model}", headers=api.alice).status_code == 200
    worker.turn()
    failed = job(api, third)
    assert (failed["status"], failed["error"]["code"], failed["error"]["param"]) == (
        "failed",
        "model_not_found",
        "model",
    )
    assert model in failed["error"]["message"]


def test_the_eval_a_job_scores_with_is_handed_to_its_trainer_and_one_deleted_meanwhile_fails_it(worker_api):
    api = worker_api
    worker = make_worker(api)
    for deleted in (False, True):
        eval_id = make_eval(api, api.alice)
        valid = api.upload(api.alice, GOOD_FILE, "valid.jsonl").json()["id"]
        job_id = submit(api, validation_file=valid, training={"eval_id": eval_id})
        if deleted:
            assert api.client.delete(f"/v1/evals/{eval_id}", headers=api.alice).status_code == 200
        worker.turn()  # the stand-in fails if the eval is not in its run folder
        ended = job(api, job_id)
        if deleted:
            assert ended["error"] == {
                "code": "eval_not_found",
                "message": f"training.eval_id {eval_id} no longer exists",
                "param": "training.eval_id",
            }
        else:
            assert ended["status"] == "succeeded"


def test_a_fault_of_the_worker_itself_retries_the_job_and_names_no_server_path(worker_api):
    api = worker_api
    job_id = submit(api)
    worker = make_worker(api)
    missing = api.settings.data_dir / "no-trainer-here"
    worker.context.trainer_command = lambda *args, **kwargs: [str(missing)]  # the trainer cannot be started
    worker.turn()

    retried = job(api, job_id)
    assert (retried["status"], retried["attempt"]) == ("queued", 1)
    said = messages(api, job_id)[-1]
    assert said.startswith("Attempt 1 failed: the worker failed: FileNotFoundError: ")
    assert "'<data folder>/no-trainer-here'" in said
    assert str(api.settings.data_dir) not in str(events(api, job_id))
    assert api.queue.sent == [job_id, job_id]
