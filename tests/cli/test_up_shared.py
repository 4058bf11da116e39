"""`lmtune up` shared by two keys: one key over its job quota is refused while the other's job is
accepted and runs, and everything the service writes is private to its user."""

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import openai
import pytest

from cli.sample_data import chat_examples
from lmtune.quotas import folder_bytes
from lmtune.store.database import open_database
from lmtune.store.jobs import get_job
from tests.deployment import wait_until_listening
from tests.service.conftest import jsonl
from tests.waiting import wait_while_progressing
from workers.ports import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_key_over_its_job_quota_is_refused_while_another_keys_job_runs_and_the_data_is_private(tmp_path):
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(LMTUNE_DATA_DIR=str(data), HF_HUB_OFFLINE="1", LMTUNE_QUOTA_ACTIVE_JOBS="1")
    alice_key, bob_key = (
        subprocess.run(
            [sys.executable, "-m", "cli", "keys", "create", name],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for name in ("alice", "bob")
    )
    port = free_port()
    log = (tmp_path / "up.log").open("wb")
    up = subprocess.Popen(
        [sys.executable, "-m", "cli", "up", "--port", str(port), "--gpus", "0"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_until_listening(port, up)
        alice, bob = (
            openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0)
            for key in (alice_key, bob_key)
        )
        body = {
            "model": "lmtune-tiny",
            "hyperparameters": {"n_epochs": 2, "batch_size": 4},
            "extra_body": {"training": {"checkpoint_every_steps": 3}},
        }
        alices_file = alice.files.create(file=("a.jsonl", jsonl(chat_examples(16, seed=4))), purpose="fine-tune")
        alices = alice.fine_tuning.jobs.create(training_file=alices_file.id, **body)

        with pytest.raises(openai.RateLimitError) as refused:
            alice.fine_tuning.jobs.create(training_file=alices_file.id, **body)
        assert refused.value.code == "quota_exceeded" and alices.id in refused.value.message

        bobs_file = bob.files.create(file=("b.jsonl", jsonl(chat_examples(16, seed=5))), purpose="fine-tune")
        bobs = bob.fine_tuning.jobs.create(training_file=bobs_file.id, **body)
        assert bobs.status == "queued"

        def state(client, job_id):
            job = client.fine_tuning.jobs.retrieve(job_id)
            return job.status, job.model_extra["progress"]["step"]

        for client, job in ((alice, alices), (bob, bobs)):
            done = wait_while_progressing(
                lambda client=client, job=job: state(client, job.id),
                lambda s: s[0] in ("succeeded", "failed", "cancelled"),
                what=f"{job.id} finished",
                diagnose=lambda: (tmp_path / "up.log").read_text()[-3000:],
            )
            assert done[0] == "succeeded", client.fine_tuning.jobs.retrieve(job.id).error
    finally:
        os.killpg(up.pid, signal.SIGTERM)
        up.wait(timeout=60)

    # what each job stores is measured for the storage quota: its whole run folder
    db = open_database(f"sqlite:///{data / 'lmtune.db'}")
    run = data / "jobs" / bobs.id
    assert get_job(db, bobs.id).output_bytes == folder_bytes(run) > 0

    # private to the service's user: files 0600, folders 0700, all the way down
    assert mode(data / "lmtune.db") == 0o600
    checkpoints = list((run / "checkpoints").iterdir())
    assert checkpoints, "the run wrote checkpoints"
    for path in [data, data / "files", data / "jobs", run, *checkpoints, *(data / "files").iterdir(), *run.rglob("*")]:
        assert mode(path) == (0o700 if path.is_dir() else 0o600), path
