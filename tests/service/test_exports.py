"""GGUF exports through the routes and a worker's turn: asked once (a second request reuses the
export), written by the worker from the final model or a LoRA checkpoint merged into its base, kept
in the run folder with a manifest, downloaded in ranges matching its sha256, and read back by
transformers' GGUF loader with the weights it was made from."""

import hashlib
import json
import shutil

import pytest
import torch

from lmtune.layout import DataLayout, checkpoint_name, write_manifest
from lmtune.store import exports as export_store
from lmtune.store import history
from lmtune.store.jobs import claim_job, finish_attempt
from tests.service.conftest import GOOD_FILE
from tests.service.test_api_errors import error_of
from workers.export_runner import run_next_export
from workers.job_runner import WorkerContext


def lora_checkpoint(base, folder) -> None:
    """An adapter of `base` that changes its answers (B is not zero as after init)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(1)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]),
    )
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            parameter.data.normal_(0, 0.05)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(base).save_pretrained(folder)


def trained_job(api, tiny_model) -> str:
    """A succeeded job on lmtune-tiny whose final model is a whole model and whose step-5 checkpoint
    is a LoRA adapter (as a LoRA run keeps them)."""
    file_id = api.upload(api.alice, GOOD_FILE).json()["id"]
    job_id = api.client.post(
        "/v1/fine_tuning/jobs", headers=api.alice, json={"model": "lmtune-tiny", "training_file": file_id}
    ).json()["id"]
    db, data = api.client.app.state.db, DataLayout(api.settings.data_dir)
    run = data.job(job_id)
    shutil.copytree(tiny_model, run.final)
    write_manifest(run.final)
    checkpoint = run.checkpoints / checkpoint_name(5)
    lora_checkpoint(tiny_model, checkpoint)
    write_manifest(checkpoint)
    attempt = claim_job(db, job_id, "test-worker", 60, 3)
    history.record_report(db, job_id, attempt, history.Report(checkpoints={5: (data.relative(checkpoint), None)}))
    finish_attempt(db, job_id, attempt, "succeeded", fine_tuned_model=f"ft:lmtune-tiny:{job_id}")
    return job_id


@pytest.fixture
def job(api, tiny_model):
    return trained_job(api, tiny_model)


def export(api, job_id, **body):
    return api.client.post(f"/v1/fine_tuning/jobs/{job_id}/exports", headers=api.alice, json=body)


def work(api) -> None:
    """One turn of a worker on the exports queue."""
    context = WorkerContext(api.settings, api.client.app.state.db, "worker-a", 0, api.queue)
    run_next_export(context, export_store.export_queue(api.settings.queue_prefix))


def download(api, url: str, entry: dict, tmp_path) -> bytes:
    """The file in two Range requests, each answered with the manifest's sha256."""
    size, parts = entry["bytes"], []
    for start, end in ((0, size // 2), (size // 2, size)):
        part = api.client.get(entry["url"], headers={**api.alice, "Range": f"bytes={start}-{end - 1}"})
        assert part.status_code == 206 and part.headers["x-checksum-sha256"] == entry["sha256"]
        parts.append(part.content)
    content = b"".join(parts)
    assert hashlib.sha256(content).hexdigest() == entry["sha256"]
    return content


def read_back(gguf_bytes: bytes, folder):
    from transformers import AutoModelForCausalLM

    folder.mkdir()
    (folder / "model.gguf").write_bytes(gguf_bytes)
    return AutoModelForCausalLM.from_pretrained(folder, gguf_file="model.gguf").state_dict()


def assert_same_weights(expected: dict, got: dict, tolerance: float) -> None:
    assert set(got) == set(expected)
    worst = max((expected[k].float() - got[k].float()).abs().max().item() for k in expected)
    assert worst < tolerance, worst


def test_the_final_model_exports_once_and_downloads_as_gguf_with_its_weights(api, job, tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM

    first = export(api, job, format="gguf", quantization="f16")
    assert first.status_code == 200 and first.json()["status"] == "queued" and first.json()["step_number"] is None
    again = export(api, job, format="gguf", quantization="f16")
    assert again.json()["id"] == first.json()["id"] and api.queue.sent.count(first.json()["id"]) == 1
    error_of(api.client.get(first.json()["files_url"], headers=api.alice), 404)  # not written yet

    work(api)
    done = api.client.get(f"/v1/fine_tuning/jobs/{job}/exports/{first.json()['id']}", headers=api.alice).json()
    assert done["status"] == "succeeded", done["error"]
    assert done["progress"] == 1.0 and done["bytes"] > 0
    files = {e["path"]: e for e in api.client.get(done["files_url"], headers=api.alice).json()["data"]}
    gguf_name = f"{job}-final-f16.gguf"
    assert set(files) == {gguf_name, "Modelfile"}
    assert done["bytes"] == sum(e["bytes"] for e in files.values())  # what a download fetches
    modelfile = api.client.get(files["Modelfile"]["url"], headers=api.alice).text
    assert f"FROM ./{gguf_name}" in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile
    assert "<|im_start|>user\n{{ .Content }}<|im_end|>\n" in modelfile
    content = download(api, files[gguf_name]["url"], files[gguf_name], tmp_path)
    expected = AutoModelForCausalLM.from_pretrained(tiny_model).state_dict()
    assert_same_weights(expected, read_back(content, tmp_path / "back"), 1e-3)

    # asked again once written: the same export, nothing queued
    assert export(api, job, format="gguf", quantization="f16").json()["status"] == "succeeded"
    assert api.queue.sent.count(first.json()["id"]) == 1
    listed = api.client.get(f"/v1/fine_tuning/jobs/{job}/exports", headers=api.alice).json()["data"]
    assert [e["id"] for e in listed] == [first.json()["id"]]


def test_a_lora_checkpoint_is_merged_into_its_base_and_quantised_to_q8_0(api, job, tiny_model, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    created = export(api, job, format="gguf", quantization="q8_0", step=5).json()
    assert created["step_number"] == 5
    work(api)
    done = api.client.get(f"/v1/fine_tuning/jobs/{job}/exports/{created['id']}", headers=api.alice).json()
    assert done["status"] == "succeeded", done["error"]
    files = {e["path"]: e for e in api.client.get(done["files_url"], headers=api.alice).json()["data"]}
    gguf_name = f"{job}-step-000005-q8_0.gguf"
    content = download(api, files[gguf_name]["url"], files[gguf_name], tmp_path)
    run = DataLayout(api.settings.data_dir).job(job)
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    merged = PeftModel.from_pretrained(base, run.checkpoints / checkpoint_name(5)).merge_and_unload().state_dict()
    unmerged = AutoModelForCausalLM.from_pretrained(tiny_model).state_dict()
    back = read_back(content, tmp_path / "back")
    assert_same_weights(merged, back, 0.02)  # Q8_0: a scale per 32 weights
    moved = merged["model.layers.0.self_attn.q_proj.weight"] - unmerged["model.layers.0.self_attn.q_proj.weight"]
    assert moved.abs().max() > 0.05  # the adapter's change is in the file, not only the base
    # kept in the run folder with a manifest; the merged copy made on the way is gone
    folder = run.exports / "step-000005-gguf-q8_0"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert sorted(e["path"] for e in manifest["files"]) == sorted(["Modelfile", gguf_name])
    assert not list(run.exports.glob(".partial-*"))


def test_bad_requests_say_what_to_change(api, job):
    assert error_of(export(api, job, format="onnx"), 400)["param"] == "format"
    assert error_of(export(api, job, quantization="q2_k"), 400)["param"] == "quantization"
    missing = error_of(export(api, job, step=7), 404)
    assert "no checkpoint at step 7" in missing["message"] and "kept: 5" in missing["message"]
    assert error_of(export(api, job, unknown=1), 400)
    for step in (2**63, True, "5", 5.0):  # past the database's integers (was a 500), or not an integer
        assert error_of(export(api, job, step=step), 400)["param"] == "step", step
    for wrong in ({"format": "onnx"}, {"quantization": "Q8_0"}):  # coded as the schema's own refusals
        assert error_of(export(api, job, **wrong), 400)["code"] == "invalid_value"
    url = f"/v1/fine_tuning/jobs/{job}/exports"
    for body in (
        {"content": b""},
        {"content": b'{"format": "gguf"}'},
        {"json": []},
    ):  # none, not read as JSON, not an object
        refused = error_of(api.client.post(url, headers=api.alice, **body), 400)["message"]
        assert refused == "the request's body must be a JSON object, sent with Content-Type: application/json"
    error_of(api.client.post(f"/v1/fine_tuning/jobs/{job}/exports", headers=api.bob, json={}), 404)
    assert api.queue.sent.count(job) == 1 and len(api.queue.sent) == 1  # only the job itself was sent


def test_an_architecture_gguf_does_not_cover_is_refused_at_once(api, job):
    config = DataLayout(api.settings.data_dir).job(job).final / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "architectures": ["GPT2LMHeadModel"]}))
    refused = error_of(export(api, job), 400)
    assert "LlamaForCausalLM" in refused["message"] and "GPT2LMHeadModel" in refused["message"]


def test_a_failed_export_is_tried_again_when_asked_again(api, job, monkeypatch):
    from workers.models import gguf_export

    created = export(api, job).json()
    monkeypatch.setattr(gguf_export, "_PRE_TOKENIZERS", None)  # a fault of the worker, every attempt
    for _ in range(api.settings.max_attempts):
        work(api)
    failed = api.client.get(f"/v1/fine_tuning/jobs/{job}/exports/{created['id']}", headers=api.alice).json()
    assert failed["status"] == "failed" and failed["error"]["code"] == "worker_error"
    assert str(api.settings.data_dir) not in failed["error"]["message"]
    monkeypatch.undo()
    assert export(api, job).json()["status"] == "queued"
    work(api)
    done = api.client.get(f"/v1/fine_tuning/jobs/{job}/exports/{created['id']}", headers=api.alice).json()
    assert done["status"] == "succeeded"


def test_exports_count_in_the_storage_quota_and_one_that_would_pass_it_is_refused(make_api, tiny_model):
    from lmtune.estimates import parameter_count
    from lmtune.quotas import human_size

    f16 = parameter_count(tiny_model) * 2  # what the f16 file's weights take; q8_0 about half
    api = make_api(quota_storage_bytes=len(GOOD_FILE) + f16 - 1)
    job = trained_job(api, tiny_model)
    sent = len(api.queue.sent)

    refused = error_of(export(api, job, format="gguf", quantization="f16"), 429)
    assert refused["code"] == "quota_exceeded"
    assert (
        f"of the {human_size(len(GOOD_FILE) + f16 - 1)} allowed; this export adds about {human_size(f16)}"
        in refused["message"]
    )
    assert api.client.get(f"/v1/fine_tuning/jobs/{job}/exports", headers=api.alice).json()["data"] == []
    assert len(api.queue.sent) == sent  # nothing for a worker to write

    final, checkpoint = (export(api, job, quantization="q8_0", **at).json() for at in ({}, {"step": 5}))
    assert final["status"] == checkpoint["status"] == "queued"  # each fits beside what is counted now
    work(api)  # the final model's: written, and the run folder it sits in measured again
    work(api)  # the checkpoint's: the written export now counts, so there is no room for this one
    exports = api.client.get(f"/v1/fine_tuning/jobs/{job}/exports", headers=api.alice).json()["data"]
    done, failed = sorted(exports, key=lambda e: e["step_number"] is not None)
    assert done["status"] == "succeeded", done["error"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "quota_exceeded"
    assert f"(DELETE /v1/fine_tuning/jobs/{{id}}), the largest: {job}" in failed["error"]["message"]
    run = DataLayout(api.settings.data_dir).job(job)
    assert not (run.exports / "step-000005-gguf-q8_0").exists()
    again = error_of(export(api, job, quantization="f16"), 429)  # the job's outputs, its export included
    assert "this export adds about" in again["message"] and job in again["message"]
