"""`lmtune up` on a fresh data folder with no external service: SQLite and the embedded broker."""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import openai
import pytest

from lmtune.sample_data import chat_examples
from tests.deployment import job_progress, wait_until_listening
from tests.service.conftest import jsonl
from tests.waiting import wait_while_progressing, working

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_lmtune_up_runs_a_job_to_the_end_even_when_its_worker_is_killed(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(LMTUNE_DATA_DIR=str(tmp_path / "data"), HF_HUB_OFFLINE="1", LMTUNE_LEASE_SECONDS="4", LMTUNE_SWEEP_SECONDS="1")
    key = subprocess.run([sys.executable, "-m", "lmtune.cli", "keys", "create", "me"], env=env, capture_output=True,
                         text=True, check=True).stdout.strip()  # fmt: skip
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = (tmp_path / "up.log").open("wb")
    up = subprocess.Popen([sys.executable, "-m", "lmtune.cli", "up", "--port", str(port), "--gpus", "0"], env=env,
                          stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        wait_until_listening(port, up)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0)
        training = client.files.create(file=("train.jsonl", jsonl(chat_examples(24, seed=9))), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(model="lmtune-tiny", training_file=training.id,
                                             hyperparameters={"n_epochs": 10, "batch_size": 4},
                                             extra_body={"training": {"checkpoint_every_steps": 5}})  # fmt: skip

        log_tail = lambda: (tmp_path / "up.log").read_text()[-3000:]  # noqa: E731
        wait_while_progressing(lambda: client.fine_tuning.jobs.retrieve(job.id), lambda _: client.fine_tuning.jobs.checkpoints.list(job.id).data,
                               progress=lambda j: (job_progress(j), working(up.pid)), what="a first checkpoint", diagnose=log_tail)  # fmt: skip
        (worker,) = children_of(up.pid)
        os.kill(worker, signal.SIGKILL)  # `up` starts another; the job continues from its checkpoint

        job = wait_while_progressing(lambda: client.fine_tuning.jobs.retrieve(job.id), lambda j: j.status in ("succeeded", "failed"),
                                     progress=lambda j: (job_progress(j), working(up.pid)), what="the job's end", diagnose=log_tail)  # fmt: skip
        assert job.status == "succeeded", job.error
        assert job.model_extra["attempt"] == 2 and job.model_extra["progress"]["step"] == 60
        assert any("was lost" in event.message for event in client.fine_tuning.jobs.list_events(job.id, limit=100))
        assert (tmp_path / "data" / "lmtune.db").exists() and (tmp_path / "data" / "broker.sqlite").exists()
        assert (tmp_path / "data" / "jobs" / job.id / "final" / "model.safetensors").exists()
    finally:
        os.killpg(up.pid, signal.SIGTERM)
        up.wait(timeout=30)
