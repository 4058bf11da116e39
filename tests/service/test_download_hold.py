"""A download holds what it started: its files are opened before the headers, so a job deleted (or a
checkpoint pruned) while the body is being sent still gives the whole body; and its errors stay short."""

import asyncio
import io
import shutil
import tarfile

import pytest

from lmtune.layout import DataLayout
from tests.service.conftest import GOOD_FILE, asgi_request
from tests.service.test_downloads import FILES, trained_job


def download_removing_on_headers(api, path: str, remove) -> tuple[int, bytes]:
    """GET `path` on the app itself; `remove()` runs as the status line and headers are sent, before
    the first byte of the body. Returns the status and the whole body."""
    messages = []
    never = asyncio.Event()

    async def receive():
        await never.wait()

    async def send(message):
        messages.append(message)
        if message["type"] == "http.response.start":
            remove()

    scope = asgi_request(api, "GET", path)
    asyncio.run(api.client.app(scope, receive, send))
    [start] = [m for m in messages if m["type"] == "http.response.start"]
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    assert not [m for m in messages if m["type"] == "http.response.body"][-1].get("more_body")  # it ended
    return start["status"], body


def whole_file(body: bytes) -> dict[str, bytes]:
    return {"model.safetensors": body}


def whole_archive(body: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        members = {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    return {name: members[name] for name in FILES}


@pytest.mark.parametrize(
    ("route", "read", "expected"),
    [
        ("final/files/model.safetensors", whole_file, {"model.safetensors": FILES["model.safetensors"]}),
        ("final/content", whole_archive, FILES),
    ],
)
def test_a_download_whose_job_is_removed_as_it_starts_arrives_whole(api, route, read, expected):
    job_id, _ = trained_job(api)
    run = DataLayout(api.settings.data_dir).job(job_id)
    status, body = download_removing_on_headers(
        api, f"/v1/fine_tuning/jobs/{job_id}/{route}", lambda: shutil.rmtree(run.root)
    )
    assert status == 200 and not run.root.exists()
    assert read(body) == expected


def test_a_long_download_path_is_quoted_short_in_its_404(api):
    job_id, _ = trained_job(api)
    response = api.client.get(f"/v1/fine_tuning/jobs/{job_id}/final/files/{'a' * 15_000}", headers=api.alice)
    assert response.status_code == 404 and response.json()["error"]["code"] == "file_not_found"
    assert len(response.content) < 400 and "a" * 41 not in response.text


def test_the_final_model_of_a_cancelled_job_says_there_will_be_none(api):
    file_id = api.upload(api.alice, GOOD_FILE).json()["id"]
    job_id = api.client.post(
        "/v1/fine_tuning/jobs", headers=api.alice, json={"model": "lmtune-tiny", "training_file": file_id}
    ).json()["id"]
    queued = api.client.get(f"/v1/fine_tuning/jobs/{job_id}/final/content", headers=api.alice).json()["error"]
    assert queued["code"] == "not_ready" and "when the job succeeds" in queued["message"]
    api.client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel", headers=api.alice)
    for route in ("final/content", "final/files"):
        response = api.client.get(f"/v1/fine_tuning/jobs/{job_id}/{route}", headers=api.alice)
        error = response.json()["error"]
        assert response.status_code == 404 and error["code"] == "no_final_model"
        assert "was cancelled" in error["message"] and "checkpoints" in error["message"]
        assert "when the job succeeds" not in error["message"]
