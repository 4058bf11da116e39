"""Creates that a client may safely retry: `Idempotency-Key`, and a broker that is down."""

from lmtune.dispatch import CeleryJobQueue
from service.deps import get_queue
from tests.service.conftest import GOOD_FILE, jsonl
from workers.ports import free_port


def create(api, headers, file_id, **body):
    return api.client.post(
        "/v1/fine_tuning/jobs", headers=headers, json={"model": "lmtune-tiny", "training_file": file_id, **body}
    )


def test_a_retried_upload_with_the_same_key_stores_one_file(api):
    key = {**api.alice, "Idempotency-Key": "upload-1"}
    first, again = api.upload(key, GOOD_FILE), api.upload(key, GOOD_FILE)
    assert first.status_code == again.status_code == 200 and first.json()["id"] == again.json()["id"]
    assert len(api.client.get("/v1/files", headers=api.alice).json()["data"]) == 1
    assert len(list((api.settings.data_dir / "files").glob("*.jsonl"))) == 1

    other = api.upload(
        key, jsonl([{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}] * 10)
    )
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_key_reused"
    assert len(list((api.settings.data_dir / "files").glob("*.jsonl"))) == 1
    bob = api.upload({**api.bob, "Idempotency-Key": "upload-1"}, GOOD_FILE)  # keys are per API key
    assert bob.status_code == 200 and bob.json()["id"] != first.json()["id"]


def test_a_retried_job_creation_with_the_same_key_makes_one_job(api):
    file_id = api.upload(api.alice, GOOD_FILE).json()["id"]
    key = {**api.alice, "Idempotency-Key": "job-1"}
    first, again = create(api, key, file_id, suffix="a"), create(api, key, file_id, suffix="a")
    assert first.status_code == again.status_code == 200 and first.json()["id"] == again.json()["id"]
    assert len(api.client.get("/v1/fine_tuning/jobs", headers=api.alice).json()["data"]) == 1
    conflict = create(api, key, file_id, suffix="b")
    assert conflict.status_code == 409 and conflict.json()["error"]["param"] == "Idempotency-Key"
    third = create(api, api.alice, file_id).json()["id"]
    assert third != first.json()["id"]  # no key: a new job each time
    # the repeat found its job still queued and sent it again (harmless: a message only wakes a worker)
    assert api.queue.sent == [first.json()["id"], first.json()["id"], third]


def test_a_replayed_create_sends_the_job_its_first_request_stored_but_never_sent(api):
    file_id = api.upload(api.alice, GOOD_FILE).json()["id"]
    key = {**api.alice, "Idempotency-Key": "job-unsent"}
    api.client.app.dependency_overrides[get_queue] = lambda: LostQueue()  # the API died between storing and sending
    first = create(api, key, file_id)
    assert first.status_code == 200 and api.queue.sent == []
    api.client.app.dependency_overrides[get_queue] = lambda: api.queue
    again = create(api, key, file_id)  # the client, with no answer, retries
    assert again.json()["id"] == first.json()["id"]
    assert api.queue.sent == [first.json()["id"]]  # a worker is woken now, not at the next sweep


class LostQueue:
    def send(self, job) -> None:
        pass


def test_a_job_created_while_the_broker_is_down_is_stored_and_answered_queued(api):
    dead_broker = api.settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})  # nothing listens
    api.client.app.dependency_overrides[get_queue] = lambda: CeleryJobQueue(dead_broker)
    file_id = api.upload(api.alice, GOOD_FILE).json()["id"]
    answer = create(api, api.alice, file_id)
    assert answer.status_code == 200, answer.text
    job = answer.json()
    assert job["status"] == "queued" and job["queue_position"] == 1
    assert api.client.get(f"/v1/fine_tuning/jobs/{job['id']}", headers=api.alice).json()["status"] == "queued"
