"""An `Idempotency-Key` replayed after what it created was deleted: a 409 saying so, never a 500."""

from tests.service.conftest import GOOD_FILE


def test_a_key_replayed_after_its_file_was_deleted_is_a_409_naming_the_key(api):
    key = {**api.alice, "Idempotency-Key": "upload-deleted"}
    file_id = api.upload(key, GOOD_FILE).json()["id"]
    assert api.client.delete(f"/v1/files/{file_id}", headers=api.alice).status_code == 200
    for _ in range(2):  # and again: the key keeps answering the same
        again = api.upload(key, GOOD_FILE)
        assert again.status_code == 409, again.text
        error = again.json()["error"]
        assert error["code"] == "idempotent_object_deleted" and error["param"] == "Idempotency-Key"
        assert file_id in error["message"] and "new key" in error["message"]
    assert api.client.get("/v1/files", headers=api.alice).json()["data"] == []  # nothing was stored
    assert list((api.settings.data_dir / "files").glob("*.jsonl")) == []
    assert api.upload({**api.alice, "Idempotency-Key": "upload-new"}, GOOD_FILE).status_code == 200


def test_a_key_replayed_after_its_job_was_deleted_is_a_409_naming_the_key(api):
    file_id = api.upload(api.alice, GOOD_FILE).json()["id"]
    key = {**api.alice, "Idempotency-Key": "job-deleted"}
    body = {"model": "lmtune-tiny", "training_file": file_id}
    job_id = api.client.post("/v1/fine_tuning/jobs", headers=key, json=body).json()["id"]
    assert api.client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel", headers=api.alice).status_code == 200
    assert api.client.delete(f"/v1/fine_tuning/jobs/{job_id}", headers=api.alice).status_code == 200
    again = api.client.post("/v1/fine_tuning/jobs", headers=key, json=body)
    assert again.status_code == 409, again.text
    assert again.json()["error"]["code"] == "idempotent_object_deleted" and job_id in again.json()["error"]["message"]
    assert api.client.get("/v1/fine_tuning/jobs", headers=api.alice).json()["data"] == []
    assert len(api.queue.sent) == 1  # the replay sent nothing
