"""Webhooks through real processes: a job trained by an `lmtune worker` (present in the store with
its memory) on PostgreSQL and Redis, its event delivered by `lmtune deliver-webhooks` to a receiver
in the test; the deliverer killed in the middle of a try, and another one finishing the delivery
with the same webhook-id."""

import json
import signal
import time

import openai
import pytest

from lmtune.store import webhooks
from lmtune.store.workers import live_workers
from tests.deployment import OWNER, open_deployment
from tests.waiting import wait_while_progressing, working
from tests.webhook_receiver import Receiver

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.parametrize("database_url", ["postgresql"], indirect=True),
]


def test_a_job_s_end_reaches_the_receiver_across_a_killed_deliverer(tmp_path, database_url):
    stuck_then_ok = Receiver(answer=lambda n: None if n == 0 else 200)  # the first try gets no answer
    settings = {"LMTUNE_WEBHOOK_ALLOW_PRIVATE": "true", "LMTUNE_WEBHOOK_TIMEOUT_SECONDS": "3"}
    try:
        with open_deployment(tmp_path, database_url, **settings) as deployment:
            endpoint = webhooks.create_endpoint(
                deployment.db, OWNER, "test", stuck_then_ok.url, list(webhooks.EVENT_TYPES), int(time.time())
            )
            first = deployment.start_deliverer()
            job = deployment.submit(examples=16, epochs=1)
            deployment.start_worker()
            # the job ends on its own time: the receiver has nothing to do with it
            done = deployment.wait_for(job.id, lambda j: j.status == "succeeded", what="succeeded")
            # the worker is present, with what it has, for the estimates and /metrics
            [worker] = live_workers(deployment.db, time.time(), job.queue)
            assert worker.gpus == 0 and worker.memory_bytes > 2**30 and job.queue in worker.queues
            wait_while_progressing(
                lambda: len(stuck_then_ok.received),
                lambda count: count >= 1,
                progress=lambda count: (count, working(first.pid)),
                what="the first try",
                diagnose=deployment.logs,
            )
            first.send_signal(signal.SIGKILL)  # mid-try: the receiver never answered it
            first.wait()
            second = deployment.start_deliverer()
            wait_while_progressing(
                lambda: webhooks.recent_deliveries(deployment.db, endpoint.id, 5)[0][0],
                lambda delivery: delivery.status == "succeeded",
                progress=lambda delivery: (delivery.attempts, len(stuck_then_ok.received), working(second.pid)),
                what="the delivery recorded as succeeded",
                diagnose=deployment.logs,
            )
    finally:
        stuck_then_ok.close()
    tries = stuck_then_ok.received
    assert len(tries) == 2 and tries[0].headers["webhook-id"] == tries[1].headers["webhook-id"]
    event = openai.OpenAI(api_key="unused").webhooks.unwrap(tries[1].body, tries[1].headers, secret=endpoint.secret)
    assert event.type == "fine_tuning.job.succeeded" and event.data.id == job.id
    assert json.loads(tries[1].body)["created_at"] == done.finished_at
