"""GET /metrics: off without a token, Prometheus' text format with one; request counts by route
template, and the store's figures (jobs, queues, workers, attempts and hand-backs, running jobs'
speed, webhook deliveries) as an operator would graph them."""

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lmtune.store import webhooks
from lmtune.store.jobs import claim_next_job, get_job
from lmtune.store.workers import WorkerResources, announce_worker
from tests.helpers import record_step
from tests.service.conftest import GOOD_FILE
from workers.outcome import Recorder
from workers.supervision import Ending
from workers.training.errors import EXIT_PAUSED

TOKEN = "metrics-token-0123456789"


@pytest.fixture
def api(make_api):
    return make_api(metrics_token=TOKEN)


def scrape(api) -> dict[tuple[str, tuple], float]:
    answer = api.client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def submit(api, headers=None) -> str:
    headers = headers or api.alice
    file_id = api.upload(headers, GOOD_FILE).json()["id"]
    body = {"model": "lmtune-tiny", "training_file": file_id}
    return api.client.post("/v1/fine_tuning/jobs", headers=headers, json=body).json()["id"]


def test_metrics_are_off_without_a_token_and_want_it_when_set(make_api, api):
    assert make_api().client.get("/metrics").status_code == 404
    assert api.client.get("/metrics").status_code == 401
    assert api.client.get("/metrics", headers={"Authorization": "Bearer wrong-token-00000000"}).status_code == 401
    assert api.client.get("/metrics", headers=api.alice).status_code == 401  # an API key is not the token


def test_requests_are_counted_by_route_template_and_status(api):
    job_id = submit(api)
    for _ in range(3):
        api.client.get(f"/v1/fine_tuning/jobs/{job_id}", headers=api.alice)
    api.client.get("/v1/fine_tuning/jobs/ftjob-nothing", headers=api.alice)
    seen = scrape(api)
    route = "/v1/fine_tuning/jobs/{job_id}"
    ok = ("lmtune_http_requests_total", (("method", "GET"), ("route", route), ("status", "200")))
    missing = ("lmtune_http_requests_total", (("method", "GET"), ("route", route), ("status", "404")))
    assert seen[ok] == 3 and seen[missing] == 1
    assert seen[("lmtune_http_request_duration_seconds_count", (("method", "GET"), ("route", route)))] == 4
    assert not any(job_id in str(labels) for _, labels in seen)  # ids never become labels of requests


def test_jobs_queues_and_workers_from_the_store(api):
    queue = "api-test-cpu"
    first, second = submit(api), submit(api, api.bob)
    db = api.client.app.state.db
    resources = WorkerResources(gpus=0, gpu_memory_bytes=[], memory_bytes=8 * 2**30)
    announce_worker(db, "host:1", [queue], resources, time.time(), lasts=60)
    announce_worker(db, "host:2", [queue], resources, time.time() - 120, lasts=60)  # gone: not renewed
    seen = scrape(api)
    assert seen[("lmtune_jobs", (("queue", queue), ("status", "queued")))] == 2
    assert seen[("lmtune_queue_depth", (("queue", queue),))] == 2
    assert 0 <= seen[("lmtune_queue_oldest_wait_seconds", (("queue", queue),))] < 600
    assert seen[("lmtune_workers_live", (("queue", queue),))] == 1

    job, attempt = claim_next_job(db, queue, "host:1", 60, 3)
    record_step(
        db,
        job.id,
        attempt,
        {"step": 4, "total_steps": 10, "train_loss": 1.0, "elapsed_seconds": 2.0, "tokens_per_second": 250.0},
    )
    seen = scrape(api)
    labels = (("job", job.id), ("queue", queue))
    assert seen[("lmtune_running_job_steps_per_second", labels)] == 2.0
    assert seen[("lmtune_running_job_tokens_per_second", labels)] == 250.0
    assert seen[("lmtune_job_attempts", (("queue", queue),))] == 1

    # the worker hands the job back (a pause): counted as a hand-back, not a failure
    Recorder(api.settings, db, api.queue, get_job(db, job.id), attempt, between=lambda: None).outcome(
        Ending(EXIT_PAUSED, "pause")
    )
    seen = scrape(api)
    assert seen[("lmtune_job_handbacks", (("queue", queue),))] == 1
    assert seen[("lmtune_job_failed_attempts", (("queue", queue),))] == 0
    assert {first, second} >= {job.id}


def test_webhook_deliveries_by_status(api):
    db = api.client.app.state.db
    webhooks.create_endpoint(db, "key-x", "x", "https://a.example/", list(webhooks.EVENT_TYPES), 1)
    with db.session() as session:
        for n in range(2):
            webhooks.record_event(session, "key-x", "fine_tuning.job.failed", f"ftjob-{n}", 1)
    [claim, _] = webhooks.claim_due(db, 10, 30, {}, 4, 10)
    webhooks.record_try(db, claim, 10, 500, "answered 500", None)
    seen = scrape(api)
    assert seen[("lmtune_webhook_deliveries", (("status", "failed"),))] == 1
    assert seen[("lmtune_webhook_deliveries", (("status", "pending"),))] == 1
