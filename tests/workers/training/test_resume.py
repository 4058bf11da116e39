"""A run killed or stopped mid-way and started again gives the numbers of an uninterrupted run."""

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cli.sample_data import chat_examples, write_jsonl
from lmtune.layout import latest_checkpoint
from lmtune.spec import load_spec
from tests.helpers import metric_rows, train_losses
from tests.waiting import wait_for_exit, wait_while_progressing, working
from workers.training.errors import EXIT_PAUSED
from workers.training.loop import train

pytestmark = pytest.mark.slow  # each test trains in subprocesses and interrupts them

STEPS = 30


@pytest.fixture
def job(tmp_path, tiny_model) -> Path:
    write_jsonl(chat_examples(40, seed=3, spread=0.5), tmp_path / "train.jsonl")
    spec = {
        "model": str(tiny_model),
        "training_file": "train.jsonl",
        "seed": 7,
        "hyperparameters": {"n_epochs": 3, "batch_size": 4},
        "training": {"learning_rate": 2e-3, "shuffle": True, "checkpoint_every_steps": 5, "keep_checkpoints": 10},
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    return tmp_path / "spec.yaml"


def start(job: Path, output: Path, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "cli", "train", str(job), "--output", str(output), *extra]
    return subprocess.Popen(command, cwd=job.parent, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)


def wait_for_checkpoint(output: Path, step: int, process: subprocess.Popen) -> None:
    def newest() -> int:
        assert process.poll() is None, "the run ended before it could be interrupted"
        return (latest_checkpoint(output / "checkpoints") or (0,))[0]

    wait_while_progressing(
        newest,
        lambda found: found >= step,
        progress=lambda _: working(process.pid),
        interval=0.01,
        what=f"a checkpoint at step {step}",
    )


def test_a_killed_run_resumes_to_the_same_losses(job, tmp_path):
    train(load_spec(job), tmp_path / "reference")
    reference = train_losses(tmp_path / "reference")
    assert len(reference) == STEPS

    run = tmp_path / "run"
    process = start(job, run)
    wait_for_checkpoint(run, 5, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = latest_checkpoint(run / "checkpoints")[0]
    assert killed_at < STEPS
    # a checkpoint that was being written when the process died
    half = run / "checkpoints" / f".partial-step-{killed_at + 1:06d}"
    half.mkdir(exist_ok=True)
    (half / "model.safetensors").write_bytes(b"garbage")

    result = train(load_spec(job), run)

    assert result.steps == STEPS
    assert [row["step"] for row in metric_rows(run)] == list(range(1, STEPS + 1))
    assert train_losses(run) == pytest.approx(reference, abs=1e-4)
    assert not half.exists()


def test_sigterm_checkpoints_the_current_step_and_exits_with_the_paused_status(job, tmp_path):
    run = tmp_path / "run"
    process = start(job, run)
    wait_for_checkpoint(run, 5, process)
    process.send_signal(signal.SIGTERM)
    assert wait_for_exit(process) == EXIT_PAUSED

    stopped_at = metric_rows(run)[-1]["step"]
    assert stopped_at < STEPS
    assert latest_checkpoint(run / "checkpoints")[0] == stopped_at
    assert not (run / "final").exists()

    resumed = start(job, run)
    assert wait_for_exit(resumed) == 0
    assert [row["step"] for row in metric_rows(run)] == list(range(1, STEPS + 1))


def test_sigterm_pauses_every_process_of_a_two_process_run(job, tmp_path):
    run = tmp_path / "run"
    process = start(job, run, "--num-processes", "2")
    wait_for_checkpoint(run, 5, process)
    process.send_signal(signal.SIGTERM)
    assert wait_for_exit(process) == EXIT_PAUSED
    assert latest_checkpoint(run / "checkpoints")[0] == metric_rows(run)[-1]["step"]
