"""GET .../samples lists what the trainer wrote to samples.jsonl, by step, paged, for the job's key only;
early stopping and keep_best are refused without a validation file."""

from lmtune.layout import DataLayout
from lmtune.metrics_log import MetricsLog
from lmtune.store.jobs import create_job
from lmtune.store.keys import authenticate
from tests.service.conftest import GOOD_FILE


def a_job_with_samples(api, steps, **graded):
    owner = authenticate(api.client.app.state.db, api.alice["Authorization"][7:])
    job = create_job(api.client.app.state.db, owner=owner, spec={"model": "lmtune-tiny"}, queue="cpu")
    log = MetricsLog(DataLayout(api.settings.data_dir).job(job.id).samples)
    log.path.parent.mkdir(parents=True)
    for step in steps:
        log.append(
            {
                "step": step,
                "created_at": 1,
                "generation_seconds": 0.5,
                "samples": [
                    {
                        "prompt": "hi",
                        "completion": f"at {step}",
                        "completion_tokens": 2,
                        "finish_reason": "stop",
                        **graded,
                    }
                ],
            }
        )
    return job.id


def test_sample_sets_are_listed_by_step_and_paged(api):
    job_id = a_job_with_samples(api, [5, 10, 15])
    listed = api.client.get(f"/v1/fine_tuning/jobs/{job_id}/samples", headers=api.alice).json()
    assert listed["object"] == "list" and not listed["has_more"]
    assert [(s["step"], s["samples"][0]["completion"]) for s in listed["data"]] == [
        (5, "at 5"),
        (10, "at 10"),
        (15, "at 15"),
    ]
    assert listed["data"][0]["object"] == "fine_tuning.job.samples" and listed["data"][0]["generation_seconds"] == 0.5
    page = api.client.get(
        f"/v1/fine_tuning/jobs/{job_id}/samples",
        headers=api.alice,
        params={"limit": 1, "after": listed["data"][0]["id"]},
    ).json()
    assert [s["step"] for s in page["data"]] == [10] and page["has_more"]


def test_a_reinforcement_jobs_samples_carry_their_grades(api):
    job_id = a_job_with_samples(api, [5], reward=0.75, grades={"exact": 1.0, "length": 0.5})
    [sample] = api.client.get(f"/v1/fine_tuning/jobs/{job_id}/samples", headers=api.alice).json()["data"][0]["samples"]
    assert sample["reward"] == 0.75 and sample["grades"] == {"exact": 1.0, "length": 0.5}


def test_another_keys_samples_are_404(api):
    job_id = a_job_with_samples(api, [5])
    response = api.client.get(f"/v1/fine_tuning/jobs/{job_id}/samples", headers=api.bob)
    assert response.status_code == 404 and response.json()["error"]["code"] == "fine-tuning_job_not_found"


def test_early_stopping_and_keep_best_without_a_validation_file_are_refused(api):
    file_id = api.upload(api.alice, GOOD_FILE).json()["id"]
    for training in ({"early_stopping": {"patience": 2}}, {"keep_best": True}):
        response = api.client.post(
            "/v1/fine_tuning/jobs",
            headers=api.alice,
            json={"model": "lmtune-tiny", "training_file": file_id, "training": training},
        )
        assert response.status_code == 400
        assert (
            f"training.{next(iter(training))} watches the validation loss: give a validation_file"
            in response.json()["error"]["message"]
        )
