"""Reinforcement fine-tuning with two processes (the project's launcher, on the CPU) gives the
per-step rewards and losses of one process with the same batch: each answer is drawn from a seed of
its own step, row and place in its group, whichever process answers it, and the batch's reward
spread (scale_rewards "batch") is taken over every process's answers."""

import json
import subprocess
import sys

import pytest

from tests.helpers import metric_rows
from tests.workers.training.test_grpo_training import DIGITS, write_rows

pytestmark = pytest.mark.slow  # two trainer launches, one of them of two processes


def test_two_processes_give_the_rewards_and_losses_of_one(tmp_path, tiny_model):
    # 10 rows with batch 4: each epoch's last batch has 2, split unevenly over 2 processes x 2 slices
    job = {
        "model": str(tiny_model),
        "training_file": write_rows(tmp_path / "train.jsonl", 10),
        "validation_file": write_rows(tmp_path / "valid.jsonl", 5),
        "seed": 5,
        "method": {
            "type": "reinforcement",
            "reinforcement": {
                "grader": DIGITS,
                "hyperparameters": {"n_epochs": 2, "batch_size": 4, "eval_interval": 3, "eval_samples": 5},
            },
        },
        "training": {
            "learning_rate": 3e-3,
            "gradient_accumulation_steps": 2,
            "sample_prompts": [],
            "grpo": {"group_size": 4, "max_completion_tokens": 8, "scale_rewards": "batch", "beta": 0.04},
        },
    }
    (tmp_path / "spec.json").write_text(json.dumps(job))
    for processes in (1, 2):
        command = [sys.executable, "-m", "cli", "train", "spec.json", "--output", f"run{processes}"]
        done = subprocess.run(
            [*command, "--num-processes", str(processes)], cwd=tmp_path, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-3000:]
    one, two = (metric_rows(tmp_path / f"run{n}") for n in (1, 2))
    assert [row["step"] for row in one] == [row["step"] for row in two] == list(range(1, 7))
    assert len({row["train_reward_mean"] for row in one}) > 1  # the answers change as the model learns
    for name in ("train_reward_mean", "train_reward_std", "train_completion_length", "train_loss", "train_kl"):
        assert [row[name] for row in two] == pytest.approx([row[name] for row in one], abs=1e-4), name
    valid = [[row.get("valid_reward_mean") for row in rows] for rows in (one, two)]
    assert valid[1] == pytest.approx(valid[0], abs=1e-4) and valid[0][2] is not None
