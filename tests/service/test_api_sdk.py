"""The whole flow through the unmodified `openai` SDK, against a live `lmtune serve` and real workers
on Redis and PostgreSQL; downloads and the event stream through plain HTTP."""

import hashlib
import io
import json
import tarfile

import httpx
import openai
import pytest
import torch
from transformers import AutoModelForCausalLM

from cli.sample_data import chat_examples
from tests.deployment import job_progress
from tests.service.conftest import jsonl
from tests.waiting import wait_while_progressing, working

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.parametrize("database_url", ["postgresql"], indirect=True),
]
TRAINING = {"learning_rate": 3e-3, "checkpoint_every_steps": 5, "eval_every_steps": 5, "sample_prompts": []}


def waiter(deployment):
    def wait(client, job_id, statuses, done=None):
        """Until the job's status is one of `statuses` (and `done(job)`), as long as the job or the processes move."""
        pids = [process.pid for process in deployment.processes]
        return wait_while_progressing(
            lambda: client.fine_tuning.jobs.retrieve(job_id),
            lambda job: job.status in statuses and (done is None or done(job)),
            progress=lambda job: (job_progress(job), working(*pids)),
            what=f"{job_id} {'/'.join(statuses)}",
            diagnose=deployment.logs,
        )

    return wait


@pytest.fixture
def live(deployment):
    base_url = deployment.start_server()
    deployment.start_worker()
    key = deployment.create_key("sdk")
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0)
    http = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
    yield client, http, waiter(deployment)
    http.close()


def test_the_openai_sdk_drives_a_whole_fine_tune(live, tmp_path):
    client, http, wait = live
    training = client.files.create(
        file=("train.jsonl", jsonl(chat_examples(40, seed=5, spread=0.5))), purpose="fine-tune"
    )
    validation = client.files.create(file=("valid.jsonl", jsonl(chat_examples(12, seed=6))), purpose="fine-tune")
    assert training.status == "processed" and training.bytes > 0

    job = client.fine_tuning.jobs.create(
        model="lmtune-tiny",
        training_file=training.id,
        validation_file=validation.id,
        suffix="sdk",
        seed=3,
        hyperparameters={"n_epochs": 3, "batch_size": 4},
        metadata={"team": "search"},
        extra_body={"training": TRAINING},
    )
    assert job.status == "queued" and job.model == "lmtune-tiny" and job.seed == 3

    # the event stream delivers metrics events while the job runs
    with http.stream("GET", f"/v1/fine_tuning/jobs/{job.id}/events", params={"stream": "true"}) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("data: {"):
                event = json.loads(line[6:])
                if event["type"] == "metrics":
                    assert event["data"]["step"] >= 1 and "train_loss" in event["data"]
                    break
    running = client.fine_tuning.jobs.retrieve(job.id)
    assert running.status in ("running", "succeeded")

    done = wait(client, job.id, {"succeeded", "failed"})
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model == f"ft:lmtune-tiny:sdk:{job.id}"
    assert done.hyperparameters.n_epochs == 3 and done.trained_tokens > 0
    assert done.model_extra["progress"] == {"step": 30, "total_steps": 30}

    events = list(client.fine_tuning.jobs.list_events(job.id, limit=100))
    assert events[0].message == "The job has successfully completed"
    metrics = [e for e in events if e.type == "metrics"]
    assert len(metrics) == 30 and "valid_loss" in metrics[0].data  # the last step also validates
    page = client.fine_tuning.jobs.list_events(job.id, limit=5)
    assert len(page.data) == 5 and page.has_more

    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.step_number for c in checkpoints] == [30, 25, 20]
    assert checkpoints[0].metrics.train_loss is not None
    assert checkpoints[0].fine_tuned_model_checkpoint.endswith(":ckpt-step-30")

    results = client.files.content(done.result_files[0]).text.splitlines()
    assert results[0] == "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy" and len(results) == 31
    assert http.get(f"/v1/fine_tuning/jobs/{job.id}/metrics", params={"format": "csv"}).text.count("\n") == 31
    assert http.get(f"/v1/fine_tuning/jobs/{job.id}/loss.png").content[:4] == b"\x89PNG"

    # the fine-tuned model is listed and can start a later job
    assert done.fine_tuned_model in [m.id for m in client.models.list()]
    assert client.models.retrieve(done.fine_tuned_model).id == done.fine_tuned_model
    follow_up = client.fine_tuning.jobs.create(
        model=done.fine_tuned_model,
        training_file=training.id,
        hyperparameters={"n_epochs": 1, "batch_size": 8},
        extra_body={"training": TRAINING},
    )
    assert wait(client, follow_up.id, {"succeeded", "failed"}).status == "succeeded"

    listed = client.fine_tuning.jobs.list(limit=1)
    assert [j.id for j in listed.data] == [follow_up.id] and listed.has_more
    assert [j.id for j in client.fine_tuning.jobs.list(after=follow_up.id).data] == [job.id]
    assert [j.id for j in client.fine_tuning.jobs.list(metadata={"team": "search"}).data] == [job.id]

    _download_and_load_a_checkpoint(http, job.id, checkpoints[0].id, tmp_path)
    final = {e["path"] for e in http.get(f"/v1/fine_tuning/jobs/{job.id}/final/files").json()["data"]}
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= final
    assert http.get(f"/v1/fine_tuning/jobs/{job.id}/final/content").headers["content-type"] == "application/x-tar"


def _download_and_load_a_checkpoint(http, job_id, checkpoint_id, tmp_path):
    base = f"/v1/fine_tuning/jobs/{job_id}/checkpoints/{checkpoint_id}"
    archive = http.get(f"{base}/content")
    assert archive.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(archive.content)) as tar:
        tar.extractall(tmp_path / "downloaded", filter="data")
    folder = next((tmp_path / "downloaded").iterdir())
    manifest = json.loads((folder / "manifest.json").read_text())
    for entry in manifest["files"]:
        assert hashlib.sha256((folder / entry["path"]).read_bytes()).hexdigest() == entry["sha256"], entry["path"]
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert model(input_ids=torch.tensor([[1, 2, 3]])).logits.shape[-1] == model.config.vocab_size

    # the weights again, in three ranges, checked against the header's sha256
    listing = {e["path"]: e for e in http.get(f"{base}/files").json()["data"]}
    weights = listing["model.safetensors"]
    size, parts = weights["bytes"], []
    cuts = [0, size // 3, 2 * size // 3, size]
    for start, end in zip(cuts, cuts[1:]):
        part = http.get(f"{base}/files/model.safetensors", headers={"Range": f"bytes={start}-{end - 1}"})
        assert part.status_code == 206 and part.headers["content-range"] == f"bytes {start}-{end - 1}/{size}"
        parts.append(part.content)
        sha = part.headers["x-checksum-sha256"]
    assert hashlib.sha256(b"".join(parts)).hexdigest() == sha == weights["sha256"]


def test_cancel_pause_and_resume_through_the_sdk(live):
    client, _, wait = live
    training = client.files.create(file=("train.jsonl", jsonl(chat_examples(40, seed=7))), purpose="fine-tune")
    long_job = dict(
        model="lmtune-tiny",
        training_file=training.id,
        hyperparameters={"n_epochs": 10, "batch_size": 4},
        extra_body={"training": TRAINING},
    )

    paused_job = client.fine_tuning.jobs.create(**long_job)
    queued = client.fine_tuning.jobs.create(**long_job)
    assert client.fine_tuning.jobs.cancel(queued.id).status == "cancelled"

    wait(client, paused_job.id, {"running"}, done=lambda job: job.model_extra["progress"]["step"] >= 3)
    client.fine_tuning.jobs.pause(paused_job.id)
    paused = wait(client, paused_job.id, {"paused"})
    step = paused.model_extra["progress"]["step"]
    assert 3 <= step < 100
    with pytest.raises(openai.ConflictError):
        client.fine_tuning.jobs.pause(paused_job.id)

    assert client.fine_tuning.jobs.resume(paused_job.id).status == "queued"
    running = wait(client, paused_job.id, {"running", "succeeded"})
    cancelled = client.fine_tuning.jobs.cancel(running.id)
    final = wait(client, cancelled.id, {"cancelled", "succeeded"})
    assert final.status == "cancelled" and final.model_extra["progress"]["step"] >= step
    with pytest.raises(openai.ConflictError):
        client.fine_tuning.jobs.cancel(final.id)
