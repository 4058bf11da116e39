"""`lmtune up` on a fresh data folder with no external service: SQLite and the embedded broker; two of
them on one machine share nothing."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import psutil
import pytest

from cli.sample_data import chat_examples
from service.inference_client import SECRET_HEADER
from tests.deployment import job_progress, local_service
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


def command_line(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def test_lmtune_up_runs_a_job_to_the_end_even_when_its_worker_is_killed(tmp_path):
    with local_service(tmp_path, LMTUNE_LEASE_SECONDS="4", LMTUNE_SWEEP_SECONDS="1") as up:
        client = openai.OpenAI(base_url=f"{up.url}/v1", api_key=up.key, max_retries=0)
        training = client.files.create(file=("train.jsonl", jsonl(chat_examples(24, seed=9))), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(
            model="lmtune-tiny",
            training_file=training.id,
            hyperparameters={"n_epochs": 10, "batch_size": 4},
            extra_body={"training": {"checkpoint_every_steps": 5, "sample_prompts": []}},
        )

        wait_while_progressing(
            lambda: client.fine_tuning.jobs.retrieve(job.id),
            lambda _: client.fine_tuning.jobs.checkpoints.list(job.id).data,
            progress=lambda j: (job_progress(j), working(up.process.pid)),
            what="a first checkpoint",
            diagnose=up.log_tail,
        )
        (worker,) = [pid for pid in children_of(up.process.pid) if " worker" in command_line(pid)]
        os.kill(worker, signal.SIGKILL)  # `up` starts another; the job continues from its checkpoint

        job = wait_while_progressing(
            lambda: client.fine_tuning.jobs.retrieve(job.id),
            lambda j: j.status in ("succeeded", "failed"),
            progress=lambda j: (job_progress(j), working(up.process.pid)),
            what="the job's end",
            diagnose=up.log_tail,
        )
        assert job.status == "succeeded", job.error
        assert job.model_extra["attempt"] == 2 and job.model_extra["progress"]["step"] == 60
        assert any("was lost" in event.message for event in client.fine_tuning.jobs.list_events(job.id, limit=100))
        assert (tmp_path / "data" / "lmtune.db").exists() and (tmp_path / "data" / "broker.sqlite").exists()
        assert (tmp_path / "data" / "jobs" / job.id / "final" / "model.safetensors").exists()
        # `up` also runs the model server: the fine-tuned model answers
        reply = client.chat.completions.create(
            model=job.fine_tuned_model, messages=[{"role": "user", "content": "alpha"}], max_tokens=4
        )
        assert reply.usage.completion_tokens <= 4 and reply.choices[0].finish_reason in ("stop", "length")


def model_server_of(up) -> tuple[str, str]:
    """The URL and secret `lmtune up` gave its model server, read from the child's environment."""
    (pid,) = [pid for pid in children_of(up.process.pid) if "serve-models" in command_line(pid)]
    environment = psutil.Process(pid).environ()
    return environment["LMTUNE_INFERENCE_URL"], environment["LMTUNE_INFERENCE_SECRET"]


def test_two_lmtune_up_on_one_machine_are_independent_and_their_model_servers_answer_only_them(tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    with local_service(tmp_path / "a") as first, local_service(tmp_path / "b") as second:
        servers = {}
        for up in (first, second):
            client = openai.OpenAI(base_url=f"{up.url}/v1", api_key=up.key, max_retries=0)
            reply = client.completions.create(model="lmtune-tiny", prompt="alpha", max_tokens=2)
            assert reply.usage.completion_tokens == 2
            url, secret = servers[up.url] = model_server_of(up)
            # each one's completions were answered by its own model server, from its own data folder
            health = httpx.get(f"{url}/health", headers={SECRET_HEADER: secret}).json()
            assert health["loaded"] == [str(up.log.parent / "data" / "models" / "lmtune-tiny")], health
            # anyone else is refused: without the secret, or with the other instance's
            assert httpx.get(f"{url}/health").status_code == 401
            refused = httpx.post(f"{url}/generate", json={"model": {"source": "x"}, "prompt": "a"})
            assert refused.status_code == 401
            # the terminal client finds the instance of its data folder without --base-url
            listed = subprocess.run(
                [sys.executable, "-m", "cli", "models", "list", "--json"],
                env=up.env,
                capture_output=True,
                text=True,
            )
            assert listed.returncode == 0 and "lmtune-tiny" in listed.stdout, listed.stderr
        (first_url, first_secret), (second_url, _) = servers.values()
        assert first_url != second_url
        assert httpx.get(f"{second_url}/health", headers={SECRET_HEADER: first_secret}).status_code == 401
