"""The Celery side of a worker with no broker process: messages go through the embedded broker (SQLite
in the data folder, what REDIS_URL unset means), and a doorbell is handled by calling the worker's
task as its pool does. Trainers are stand-in processes (stand_in_trainer.py)."""

import os
import time
from contextlib import contextmanager

import pytest
from celery.signals import worker_shutting_down

from lmtune.dispatch import RUN_NEXT_JOB_TASK, waiting_messages
from lmtune.store.evals import eval_run_queue
from lmtune.store.jobs import queue_name
from lmtune.store.workers import live_workers
from tests.service.test_evals_api import ROWS, make_eval, sdk
from tests.waiting import wait_while_progressing
from tests.workers.worker_turns import job, make_worker, submit
from workers.celery_worker import build_worker, start_presence, start_sweeps

pytestmark = pytest.mark.filterwarnings("ignore:The Evals API is deprecated:DeprecationWarning")


@contextmanager
def celery_worker(api, gpus: int = 0):
    """A worker as `lmtune worker` builds it, its trainer the stand-in; stopped (its threads end) on exit."""
    app, context = build_worker(api.settings, gpus)
    context.trainer_command = make_worker(api).context.trainer_command
    try:
        yield app.tasks[RUN_NEXT_JOB_TASK], context
    finally:
        context.shutting_down.set()
        context.db.engine.dispose()


def test_one_doorbell_runs_a_job_or_an_eval_run_by_the_queue_it_rings(worker_api):
    api = worker_api
    job_id = submit(api)
    client = sdk(api, api.alice)
    evaluation = make_eval(client)
    run = client.evals.runs.create(
        evaluation.id, data_source={"type": "jsonl", "source": {"type": "file_content", "content": ROWS}}
    )
    with celery_worker(api) as (doorbell, _):
        doorbell(queue_name(0, api.settings.queue_prefix))
        doorbell(eval_run_queue(api.settings.queue_prefix))
    assert job(api, job_id)["status"] == "succeeded"
    assert client.evals.runs.retrieve(run.id, eval_id=evaluation.id).status == "completed"


def test_a_worker_told_to_stop_takes_no_new_job(worker_api):
    api = worker_api
    job_id = submit(api)
    with celery_worker(api) as (doorbell, context):
        worker_shutting_down.send(sender="lmtune-test", sig="SIGTERM", how="Warm", exitcode=0)
        assert context.shutting_down.is_set()
        doorbell(queue_name(0, api.settings.queue_prefix))
    assert (job(api, job_id)["status"], job(api, job_id)["attempt"]) == ("queued", 0)


def test_the_sweep_rings_for_a_queued_job_whose_message_was_lost(make_worker_api):
    api = make_worker_api(redeliver_seconds=0.1, sweep_seconds=0.1)
    job_id = submit(api)  # the API's message went to its in-memory queue: the broker never saw it
    queue = queue_name(0, api.settings.queue_prefix)
    assert waiting_messages(api.settings, queue) == 0
    with celery_worker(api) as (_, context):
        start_sweeps(context)
        wait_while_progressing(
            lambda: waiting_messages(api.settings, queue), lambda waiting: waiting == 1, what="a message rung"
        )
    assert job(api, job_id)["status"] == "queued"


def test_a_worker_announces_its_queues_and_the_memory_of_the_gpus_it_may_use(worker_api, tmp_path, monkeypatch):
    api = worker_api
    tools = tmp_path / "bin"
    tools.mkdir()
    nvidia_smi = tools / "nvidia-smi"  # what nvidia-smi prints for two GPUs of 80 and 40 GiB
    nvidia_smi.write_text("#!/bin/sh\nprintf '81920\\n40960\\n'\n")
    nvidia_smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}:{os.environ['PATH']}")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    with celery_worker(api, gpus=1) as (_, context):
        start_presence(context, ["gpu-1"])
        [presence] = live_workers(context.db, time.time())
    assert presence.queues == ["gpu-1"] and presence.gpus == 1
    assert presence.gpu_memory_bytes == [40960 * 2**20]  # the one GPU CUDA_VISIBLE_DEVICES leaves it
    assert presence.memory_bytes > 0
