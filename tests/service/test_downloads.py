"""Checkpoint and final-model downloads through the routes: whole as tar, file by file with Range,
every byte matching the manifest's sha256; nothing outside the manifest is served."""

import hashlib
import io
import os
import tarfile

from lmtune.layout import DataLayout, checkpoint_name, write_manifest
from lmtune.store import history
from lmtune.store.fine_tuned import add_fine_tuned_model
from lmtune.store.jobs import claim_job, finish_attempt, get_job
from tests.service.conftest import GOOD_FILE
from tests.service.test_api_errors import error_of

FILES = {
    "model.safetensors": os.urandom(300_000),
    "config.json": b'{"model_type": "llama"}',
    "training_state/optimizer.bin": os.urandom(1000),
}


def trained_job(api) -> tuple[str, str]:
    """A job whose worker wrote one checkpoint at step 5 and a final model: (job id, checkpoint id)."""
    file_id = api.upload(api.alice, GOOD_FILE).json()["id"]
    job_id = api.client.post(
        "/v1/fine_tuning/jobs", headers=api.alice, json={"model": "lmtune-tiny", "training_file": file_id}
    ).json()["id"]
    db, data = api.client.app.state.db, DataLayout(api.settings.data_dir)
    run = data.job(job_id)
    for folder in (run.checkpoints / checkpoint_name(5), run.final):
        for path, content in FILES.items():
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            (folder / path).write_bytes(content)
        write_manifest(folder)
    (run.checkpoints / checkpoint_name(5) / "not-in-the-manifest.txt").write_text("secret")
    attempt = claim_job(db, job_id, "test-worker", 60, 3)
    checkpoint = {5: (data.relative(run.checkpoints / checkpoint_name(5)), {"step": 5})}
    history.record_report(db, job_id, attempt, history.Report(checkpoints=checkpoint))
    finish_attempt(db, job_id, attempt, "succeeded", fine_tuned_model=f"ft:lmtune-tiny:{job_id}")
    (checkpoint,) = api.client.get(f"/v1/fine_tuning/jobs/{job_id}/checkpoints", headers=api.alice).json()["data"]
    assert checkpoint["step_number"] == 5 and checkpoint["metrics"] == {"step": 5}
    return job_id, checkpoint["id"]


def test_a_checkpoint_downloads_whole_and_in_ranges_matching_its_manifest(api):
    job_id, checkpoint_id = trained_job(api)
    base = f"/v1/fine_tuning/jobs/{job_id}/checkpoints/{checkpoint_id}"
    archive = api.client.get(f"{base}/content", headers=api.alice)
    assert archive.status_code == 200 and archive.headers["content-type"] == "application/x-tar"
    with tarfile.open(fileobj=io.BytesIO(archive.content)) as tar:
        members = {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    assert {name: members[name] for name in FILES} == FILES and "not-in-the-manifest.txt" not in members

    listing = {e["path"]: e for e in api.client.get(f"{base}/files", headers=api.alice).json()["data"]}
    assert set(listing) == set(FILES)
    size = listing["model.safetensors"]["bytes"]
    cuts, parts = [0, size // 3, size], []
    for start, end in zip(cuts, cuts[1:]):
        part = api.client.get(
            f"{base}/files/model.safetensors", headers={**api.alice, "Range": f"bytes={start}-{end - 1}"}
        )
        assert part.status_code == 206 and part.headers["content-range"] == f"bytes {start}-{end - 1}/{size}"
        assert part.headers["x-checksum-sha256"] == listing["model.safetensors"]["sha256"]
        parts.append(part.content)
    assert hashlib.sha256(b"".join(parts)).hexdigest() == listing["model.safetensors"]["sha256"]


def test_a_range_past_the_end_is_a_json_416_one_not_understood_is_ignored_and_head_gives_the_size(api):
    job_id, checkpoint_id = trained_job(api)
    url = f"/v1/fine_tuning/jobs/{job_id}/checkpoints/{checkpoint_id}/files/model.safetensors"
    size = len(FILES["model.safetensors"])
    past = error_of(api.client.get(url, headers={**api.alice, "Range": f"bytes={size}-"}), 416)
    assert past["code"] == "range_not_satisfiable" and f"{size:,} bytes" in past["message"]
    assert api.client.get(url, headers={**api.alice, "Range": f"bytes={size}-"}).headers["content-range"] == (
        f"bytes */{size}"
    )
    for unread in ("bytes=10-5", "bytes=abc", "items=0-5"):  # RFC 9110: ignored, the whole file
        whole = api.client.get(url, headers={**api.alice, "Range": unread})
        assert whole.status_code == 200 and whole.content == FILES["model.safetensors"], unread
    head = api.client.head(url, headers=api.alice)
    assert head.status_code == 200 and int(head.headers["content-length"]) == size and not head.content
    assert head.headers["accept-ranges"] == "bytes" and "x-checksum-sha256" in head.headers


def test_only_manifest_files_are_served_and_only_to_the_owner(api):
    job_id, checkpoint_id = trained_job(api)
    base = f"/v1/fine_tuning/jobs/{job_id}/checkpoints/{checkpoint_id}/files"
    for path in ("not-in-the-manifest.txt", "../../../lmtune.db", "%2e%2e/%2e%2e/spec.json"):
        error_of(api.client.get(f"{base}/{path}", headers=api.alice), 404)
    error_of(api.client.get(f"{base}/model.safetensors", headers=api.bob), 404)
    error_of(api.client.get(f"/v1/fine_tuning/jobs/{job_id}/final/content", headers=api.bob), 404)


def test_the_final_model_downloads_once_the_job_succeeded(api):
    job_id, _ = trained_job(api)
    final = {
        e["path"]
        for e in api.client.get(f"/v1/fine_tuning/jobs/{job_id}/final/files", headers=api.alice).json()["data"]
    }
    assert final == set(FILES)
    weights = api.client.get(f"/v1/fine_tuning/jobs/{job_id}/final/files/model.safetensors", headers=api.alice)
    assert weights.content == FILES["model.safetensors"]


def test_deleting_an_ended_job_removes_its_files_model_and_records_and_only_its_owner_can(api):
    job_id, checkpoint_id = trained_job(api)
    db = api.client.app.state.db
    add_fine_tuned_model(
        db,
        model_id=f"ft:lmtune-tiny:{job_id}",
        owner=get_job(db, job_id).owner,
        base_model="lmtune-tiny",
        job_id=job_id,
        path="unused",
    )  # as the worker records it
    run = DataLayout(api.settings.data_dir).job(job_id)
    assert (
        error_of(api.client.delete(f"/v1/fine_tuning/jobs/{job_id}", headers=api.bob), 404)["code"]
        == "fine-tuning_job_not_found"
    )
    assert run.final.exists()

    assert api.client.delete(f"/v1/fine_tuning/jobs/{job_id}", headers=api.alice).json()["deleted"] is True
    assert not run.root.exists()
    for path in (
        f"/v1/fine_tuning/jobs/{job_id}",
        f"/v1/fine_tuning/jobs/{job_id}/checkpoints/{checkpoint_id}/content",
        f"/v1/models/ft:lmtune-tiny:{job_id}",
        f"/v1/fine_tuning/jobs/{job_id}/events",
    ):
        assert api.client.get(path, headers=api.alice).status_code == 404, path
    assert (
        error_of(api.client.delete(f"/v1/fine_tuning/jobs/{job_id}", headers=api.alice), 404)["code"]
        == "fine-tuning_job_not_found"
    )
