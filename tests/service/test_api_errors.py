"""Every bad request gets OpenAI's error shape, the right status and a message naming the problem."""

import pytest

from lmtune.store.jobs import claim_job, finish_attempt
from tests.service.conftest import GOOD_FILE, jsonl


def error_of(response, status):
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert set(body) == {"message", "type", "param", "code"}
    assert "Traceback" not in body["message"]
    return body


def create_job(api, headers, **body):
    file_id = api.upload(headers, GOOD_FILE).json()["id"]
    return api.client.post(
        "/v1/fine_tuning/jobs", headers=headers, json={"model": "lmtune-tiny", "training_file": file_id, **body}
    )


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer lmt-wrong"}, {"Authorization": "Basic abc"}])
def test_a_missing_or_wrong_key_is_401(api, headers):
    job_id = create_job(api, api.alice).json()["id"]  # one that exists: the key is refused before the job is looked at
    # each way a route reads the key: OwnerDep, OwnedJob, PresentedKey read with the page (key_reads)
    for path in (
        "/v1/files",
        f"/v1/fine_tuning/jobs/{job_id}/checkpoints",
        "/v1/fine_tuning/jobs",
        "/v1/models",
        f"/v1/fine_tuning/jobs/{job_id}/events",
        f"/v1/fine_tuning/jobs/{job_id}",
    ):
        body = error_of(api.client.get(path, headers=headers), 401)
        assert body["type"] == "authentication_error", path


def test_a_bad_jsonl_upload_is_refused_with_its_lines_and_nothing_is_stored(api):
    bad = GOOD_FILE.decode().splitlines()
    bad[2] = '{"messages": [{"role": "system", "content": "hi"}]}'  # neither answered nor a prompt
    bad[6] = "{not json"
    body = error_of(api.upload(api.alice, "\n".join(bad).encode()), 400)
    assert "line 3: at least one message with the assistant role is required" in body["message"]
    assert "line 7: invalid JSON" in body["message"]
    assert body["param"] == "file"
    assert api.client.get("/v1/files", headers=api.alice).json()["data"] == []
    assert not list((api.settings.data_dir / "files").glob("*.jsonl"))


def test_an_upload_over_the_limit_is_413_and_not_stored(api):
    big = jsonl([{"text": "x" * 1000}] * 100)  # about 100 KiB > 64 KiB
    body = error_of(api.upload(api.alice, big), 413)
    assert "larger than the limit of 65,536 bytes" in body["message"]
    assert api.client.get("/v1/files", headers=api.alice).json()["data"] == []


@pytest.mark.parametrize(
    "body, param, words",
    [
        ({"hyperparameters": {"n_epochs": 0}}, "hyperparameters.n_epochs", 'must be "auto" or an integer from 1 to 50'),
        ({"hyperparameters": {"batch_size": "big"}}, "hyperparameters.batch_size", "got 'big'"),
        ({"training": {"lr_scheduler": "exp"}}, "training.lr_scheduler", "cosine"),
        ({"training": {"learnin_rate": 1}}, "training.learnin_rate", "unknown field"),
        ({"suffix": "x" * 65}, "suffix", "at most 64 characters"),
        ({"nodes": 0}, "nodes", "1"),
        ({"nodes": 65}, "nodes", "64"),
        ({"method": {"type": "reinforcement"}}, "method.reinforcement", "required"),
        ({"method": {"type": "dpo"}}, "training_file", "line 1 of file-"),
    ],
)
def test_bad_job_settings_name_the_field(api, body, param, words):
    error = error_of(create_job(api, api.alice, **body), 400)
    assert error["param"] == param
    assert words in error["message"]


def test_an_unknown_model_or_file_is_404_naming_it(api):
    file_id = api.upload(api.alice, GOOD_FILE).json()["id"]
    body = error_of(
        api.client.post("/v1/fine_tuning/jobs", headers=api.alice, json={"model": "gpt-9", "training_file": file_id}),
        404,
    )
    assert body["param"] == "model" and "'gpt-9' is not in the catalogue" in body["message"]
    body = error_of(
        api.client.post(
            "/v1/fine_tuning/jobs", headers=api.alice, json={"model": "lmtune-tiny", "training_file": "file-nope"}
        ),
        404,
    )
    assert body["param"] == "training_file" and "file-nope" in body["message"]


def test_cancel_of_a_finished_job_is_409(api):
    job = create_job(api, api.alice).json()
    db = api.client.app.state.db
    attempt = claim_job(db, job["id"], "test", 60, 3)
    finish_attempt(db, job["id"], attempt, "succeeded")
    body = error_of(api.client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel", headers=api.alice), 409)
    assert "it is succeeded" in body["message"]
    error_of(api.client.post(f"/v1/fine_tuning/jobs/{job['id']}/resume", headers=api.alice), 409)


def test_a_queued_job_shows_its_place_and_is_cancelled_at_once(api):
    first, second = create_job(api, api.alice).json(), create_job(api, api.alice).json()
    assert (first["status"], first["queue_position"], second["queue_position"]) == ("queued", 1, 2)
    assert api.queue.sent == [first["id"], second["id"]]
    listed = api.client.get("/v1/fine_tuning/jobs", headers=api.alice).json()["data"]
    assert [(job["id"], job["queue_position"]) for job in listed] == [(second["id"], 2), (first["id"], 1)]
    assert first["hyperparameters"] == {"n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": "auto"}
    cancelled = api.client.post(f"/v1/fine_tuning/jobs/{first['id']}/cancel", headers=api.alice).json()
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"]
    assert api.client.get(f"/v1/fine_tuning/jobs/{second['id']}", headers=api.alice).json()["queue_position"] == 1


def test_jobs_list_pages_and_filters_by_metadata(api):
    ids = [create_job(api, api.alice, metadata={"team": t}).json()["id"] for t in ("a", "b", "a")]
    page = api.client.get("/v1/fine_tuning/jobs", headers=api.alice, params={"limit": 2}).json()
    assert [j["id"] for j in page["data"]] == [ids[2], ids[1]] and page["has_more"]
    rest = api.client.get("/v1/fine_tuning/jobs", headers=api.alice, params={"after": ids[1]}).json()
    assert [j["id"] for j in rest["data"]] == [ids[0]] and not rest["has_more"]
    team_a = api.client.get("/v1/fine_tuning/jobs", headers=api.alice, params={"metadata[team]": "a"}).json()
    assert [j["id"] for j in team_a["data"]] == [ids[2], ids[0]]


def test_jobs_list_filters_by_status(api):
    first, second = (create_job(api, api.alice).json()["id"] for _ in range(2))
    api.client.post(f"/v1/fine_tuning/jobs/{first}/pause", headers=api.alice)
    listed = {
        status: [
            job["id"]
            for job in api.client.get("/v1/fine_tuning/jobs", headers=api.alice, params={"status": status}).json()[
                "data"
            ]
        ]
        for status in ("paused", "queued", "running")
    }
    assert listed == {"paused": [first], "queued": [second], "running": []}
    assert (
        error_of(api.client.get("/v1/fine_tuning/jobs", headers=api.alice, params={"status": "sleeping"}), 400)["param"]
        == "status"
    )


def test_two_keys_never_see_each_others_objects(api):
    file_id = api.upload(api.alice, GOOD_FILE).json()["id"]
    job_id = create_job(api, api.alice).json()["id"]
    routes = [
        ("get", f"/v1/files/{file_id}"),
        ("get", f"/v1/files/{file_id}/content"),
        ("delete", f"/v1/files/{file_id}"),
        ("get", f"/v1/fine_tuning/jobs/{job_id}"),
        ("post", f"/v1/fine_tuning/jobs/{job_id}/cancel"),
        ("post", f"/v1/fine_tuning/jobs/{job_id}/pause"),
        ("post", f"/v1/fine_tuning/jobs/{job_id}/resume"),
        ("get", f"/v1/fine_tuning/jobs/{job_id}/events"),
        ("get", f"/v1/fine_tuning/jobs/{job_id}/checkpoints"),
        ("get", f"/v1/fine_tuning/jobs/{job_id}/metrics"),
        ("get", f"/v1/fine_tuning/jobs/{job_id}/loss.png"),
        ("get", f"/v1/fine_tuning/jobs/{job_id}/final/content"),
        ("get", f"/v1/fine_tuning/jobs/{job_id}/final/files"),
    ]
    for method, path in routes:
        body = error_of(getattr(api.client, method)(path, headers=api.bob), 404)
        assert "no " in body["message"], path
    assert api.client.get("/v1/files", headers=api.bob).json()["data"] == []
    assert api.client.get("/v1/fine_tuning/jobs", headers=api.bob).json()["data"] == []
    # bob cannot train on alice's file either
    error_of(
        api.client.post(
            "/v1/fine_tuning/jobs", headers=api.bob, json={"model": "lmtune-tiny", "training_file": file_id}
        ),
        404,
    )
    assert api.client.get(f"/v1/fine_tuning/jobs/{job_id}", headers=api.alice).status_code == 200


def test_the_openapi_docs_list_every_route_with_its_errors(api):
    assert api.client.get("/docs").status_code == 200
    spec = api.client.get("/openapi.json").json()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            assert "401" in operation["responses"], f"{method} {path}"
    create = spec["paths"]["/v1/fine_tuning/jobs"]["post"]
    assert {"400", "404"} <= set(create["responses"])
    assert {"training", "gpus"} <= set(spec["components"]["schemas"]["JobCreate"]["properties"])


def test_only_fine_tuned_models_can_be_deleted_and_only_by_their_owner(api):
    from lmtune.store.fine_tuned import add_fine_tuned_model
    from lmtune.store.keys import authenticate

    db = api.client.app.state.db
    alice = authenticate(db, api.alice["Authorization"].split()[1])
    add_fine_tuned_model(
        db,
        model_id="ft:lmtune-tiny:ftjob-1",
        owner=alice,
        base_model="lmtune-tiny",
        job_id="ftjob-1",
        path="jobs/ftjob-1/final",
    )
    assert "ft:lmtune-tiny:ftjob-1" in [m["id"] for m in api.client.get("/v1/models", headers=api.alice).json()["data"]]
    assert "ft:lmtune-tiny:ftjob-1" not in [
        m["id"] for m in api.client.get("/v1/models", headers=api.bob).json()["data"]
    ]
    error_of(api.client.delete("/v1/models/ft:lmtune-tiny:ftjob-1", headers=api.bob), 404)
    refused = error_of(api.client.delete("/v1/models/lmtune-tiny", headers=api.alice), 403)
    assert refused["param"] == "model" and refused["type"] == "permission_error"
    assert api.client.delete("/v1/models/ft:lmtune-tiny:ftjob-1", headers=api.alice).json() == {
        "id": "ft:lmtune-tiny:ftjob-1",
        "object": "model",
        "deleted": True,
    }
    error_of(api.client.get("/v1/models/ft:lmtune-tiny:ftjob-1", headers=api.alice), 404)


def test_a_job_asking_for_gpus_goes_to_the_queue_of_that_shape(api):
    job = create_job(api, api.alice, gpus=2).json()
    from lmtune.store.jobs import get_job

    assert get_job(api.client.app.state.db, job["id"]).queue == f"{api.settings.queue_prefix}gpu-2"
