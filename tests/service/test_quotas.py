"""Per-key quotas: one key cannot take the machine, and the answer says what to free."""

from lmtune.quotas import human_size
from lmtune.store.jobs import record_output_bytes
from tests.service.conftest import GOOD_FILE
from tests.service.test_api_errors import create_job, error_of


def test_a_key_over_its_job_quota_gets_429_while_another_key_is_still_accepted(make_api):
    api = make_api(quota_active_jobs=2)
    first, second = (create_job(api, api.alice).json()["id"] for _ in range(2))

    refused = error_of(create_job(api, api.alice), 429)
    assert refused["code"] == "quota_exceeded"
    assert "2 jobs queued or running" in refused["message"] and "may have 2 at once" in refused["message"]
    assert first in refused["message"] and second in refused["message"] and "cancel" in refused["message"]
    assert len(api.client.get("/v1/fine_tuning/jobs", headers=api.alice).json()["data"]) == 2  # nothing stored

    assert create_job(api, api.bob).json()["status"] == "queued"  # bob is not held back by alice

    api.client.post(f"/v1/fine_tuning/jobs/{first}/cancel", headers=api.alice)
    assert create_job(api, api.alice).json()["status"] == "queued"  # a freed slot is usable at once


def test_resuming_a_paused_job_counts_towards_the_job_quota(make_api):
    api = make_api(quota_active_jobs=1)
    paused = create_job(api, api.alice).json()["id"]
    assert api.client.post(f"/v1/fine_tuning/jobs/{paused}/pause", headers=api.alice).json()["status"] == "paused"
    running = create_job(api, api.alice).json()["id"]  # a paused job holds no slot

    refused = error_of(api.client.post(f"/v1/fine_tuning/jobs/{paused}/resume", headers=api.alice), 429)
    assert refused["code"] == "quota_exceeded" and running in refused["message"]
    assert api.client.get(f"/v1/fine_tuning/jobs/{paused}", headers=api.alice).json()["status"] == "paused"

    api.client.post(f"/v1/fine_tuning/jobs/{running}/cancel", headers=api.alice)
    assert api.client.post(f"/v1/fine_tuning/jobs/{paused}/resume", headers=api.alice).json()["status"] == "queued"


def test_an_upload_past_the_storage_quota_is_429_naming_what_to_delete_and_nothing_is_stored(make_api):
    api = make_api(quota_storage_bytes=len(GOOD_FILE) * 3 // 2)
    kept = api.upload(api.alice, GOOD_FILE).json()["id"]

    refused = error_of(api.upload(api.alice, GOOD_FILE), 429)
    assert refused["code"] == "quota_exceeded"
    size, limit = human_size(len(GOOD_FILE)), human_size(api.settings.quota_storage_bytes)
    assert (
        f"stores {size} (files {size}, job outputs 0 B) of the {limit} allowed; this upload adds {size}"
        in refused["message"]
    )
    assert f"DELETE /v1/files/{{id}}), the largest: {kept}" in refused["message"]
    assert [f["id"] for f in api.client.get("/v1/files", headers=api.alice).json()["data"]] == [kept]
    assert len(list((api.settings.data_dir / "files").iterdir())) == 1  # the refused bytes are gone too

    assert api.upload(api.bob, GOOD_FILE).status_code == 200  # bob has his own quota
    api.client.delete(f"/v1/files/{kept}", headers=api.alice)
    assert api.upload(api.alice, GOOD_FILE).status_code == 200  # deleting frees the space


def test_job_outputs_count_towards_the_storage_quota(make_api):
    api = make_api(quota_storage_bytes=10 * 2**20)
    job = create_job(api, api.alice).json()
    record_output_bytes(api.client.app.state.db, job["id"], 12 * 2**20)  # as the worker measures its run folder

    again = {"model": "lmtune-tiny", "training_file": job["training_file"]}
    refused = error_of(api.client.post("/v1/fine_tuning/jobs", headers=api.alice, json=again), 429)
    assert "job outputs 12.0 MiB" in refused["message"] and "of the 10.0 MiB allowed" in refused["message"]
    assert f"(DELETE /v1/fine_tuning/jobs/{{id}}), the largest: {job['id']} (12.0 MiB)" in refused["message"]
    error_of(api.upload(api.alice, GOOD_FILE), 429)

    assert (
        error_of(api.client.delete(f"/v1/fine_tuning/jobs/{job['id']}", headers=api.alice), 409)["code"]
        == "invalid_state"
    )
    api.client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel", headers=api.alice)
    assert api.client.delete(f"/v1/fine_tuning/jobs/{job['id']}", headers=api.alice).json() == {
        "id": job["id"],
        "object": "fine_tuning.job",
        "deleted": True,
    }
    assert (
        api.client.post("/v1/fine_tuning/jobs", headers=api.alice, json=again).status_code == 200
    )  # its space is free again
