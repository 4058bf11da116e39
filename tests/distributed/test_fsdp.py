"""`training.parallelism: fsdp` on 2 gloo processes (the project's launcher): the per-step losses of
DDP, a run killed mid-way resumes from its sharded checkpoint to the same losses, and what is
published (checkpoints, final/) is ordinary Hugging Face weights, the per-process shards never
listed for download."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

from cli.sample_data import chat_examples, write_jsonl
from lmtune.layout import checkpoint_name, complete_checkpoints, read_manifest
from lmtune.spec import load_spec
from tests.helpers import metric_rows, train_losses
from tests.workers.training.test_resume import wait_for_checkpoint
from workers.training.loop import train

pytestmark = pytest.mark.slow  # a 2-process run of the tiny model, killed and resumed

STEPS = 6


def write_spec(folder: Path, model: Path, parallelism: str) -> Path:
    spec = {
        "model": str(model),
        "training_file": "train.jsonl",
        "seed": 3,
        "hyperparameters": {"n_epochs": 2, "batch_size": 8},
        "training": {
            "learning_rate": 2e-3,
            "parallelism": parallelism,
            "checkpoint_every_steps": 2,
            "keep_checkpoints": 5,
            "sample_prompts": [],
        },
    }
    path = folder / f"{parallelism}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def start(spec: Path, output: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "cli", "train", str(spec), "--output", str(output), "--num-processes", "2"]
    return subprocess.Popen(command, cwd=spec.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> None:
    _, errors = process.communicate()
    assert process.returncode == 0, errors[-3000:]


def test_fsdp_gives_ddp_s_losses_and_resumes_a_killed_run_exactly(tmp_path, tiny_model):
    write_jsonl(chat_examples(24, seed=4, spread=0.6), tmp_path / "train.jsonl")
    # DDP's losses are one process's (tests/workers/training/test_multiprocess.py): the cheap reference
    train(load_spec(write_spec(tmp_path, tiny_model, "ddp")), tmp_path / "ddp")
    reference = train_losses(tmp_path / "ddp")
    assert len(reference) == STEPS

    fsdp, run = write_spec(tmp_path, tiny_model, "fsdp"), tmp_path / "fsdp"
    process = start(fsdp, run)
    wait_for_checkpoint(run, 2, process)
    process.send_signal(signal.SIGKILL)  # the launcher; its ranks die with it
    process.wait()
    killed_at = complete_checkpoints(run / "checkpoints")[-1][0]
    assert killed_at < STEPS
    finish(start(fsdp, run))

    assert [row["step"] for row in metric_rows(run)] == list(range(1, STEPS + 1))  # each step once
    assert train_losses(run) == pytest.approx(reference, abs=1e-4)

    # the killed run's checkpoint, which the resumed run started from, holds a shard from each process
    state = run / "checkpoints" / checkpoint_name(killed_at) / "training_state"
    assert sorted(p.name for p in (state / "optimizer_0").glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    published = [path for _, path in complete_checkpoints(run / "checkpoints")] + [run / "final"]
    for folder in published:
        served = read_manifest(folder)
        assert "model.safetensors" in served and not any(path.startswith("training_state/") for path in served)
    final = AutoModelForCausalLM.from_pretrained(run / "final")
    ddp_final = AutoModelForCausalLM.from_pretrained(tmp_path / "ddp" / "final")
    for (name, weight), (_, expected) in zip(final.named_parameters(), ddp_final.named_parameters(), strict=True):
        torch.testing.assert_close(weight, expected, atol=1e-5, rtol=0, msg=name)


@pytest.mark.integration
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_job_asking_for_fsdp_on_2_gpus_trains_sharded_through_the_worker(deployment):
    """A CPU worker of the gpu-2 queue runs its trainer as 2 gloo processes, as a GPU worker runs 2 NCCL ones."""
    job = deployment.submit(examples=12, epochs=1, batch_size=6, gpus=2, parallelism="fsdp")
    deployment.start_worker(gpus=2)

    done = deployment.wait_for(job.id, lambda j: j.status in ("succeeded", "failed"), what="finished")
    assert (done.status, done.error_message) == ("succeeded", None)
    assert done.queue.endswith("gpu-2") and done.step == 2
    run = deployment.settings.data_dir / "jobs" / job.id
    [(_, checkpoint)] = complete_checkpoints(run / "checkpoints")
    assert sorted(p.name for p in (checkpoint / "training_state" / "optimizer_0").glob("*.distcp")) == [
        "__0_0.distcp",
        "__1_0.distcp",
    ]
    assert not any(path.startswith("training_state/") for path in read_manifest(checkpoint))
    AutoModelForCausalLM.from_pretrained(run / "final")  # the fine-tuned model, as served
