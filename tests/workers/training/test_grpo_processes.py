"""Reinforcement fine-tuning with two processes (the project's launcher, on the CPU) gives the
per-step rewards and losses of one process with the same batch: each answer is drawn from a seed of
its own step, row and place in its group, whichever process answers it, and the batch's reward
spread (scale_rewards "batch") is taken over every process's answers."""

import json

import pytest

from tests.helpers import metric_rows, train_in_processes
from tests.workers.training.test_grpo_training import spec

pytestmark = pytest.mark.slow  # two trainer launches, one of them of two processes


def test_two_processes_give_the_rewards_and_losses_of_one(tmp_path, tiny_model):
    grpo = {"group_size": 4, "max_completion_tokens": 8, "scale_rewards": "batch", "beta": 0.04}
    job = spec(tiny_model, tmp_path, steps=6, gradient_accumulation_steps=2, grpo=grpo)
    (tmp_path / "spec.json").write_text(json.dumps(job.model_dump(mode="json", exclude_none=True)))
    one, two = (metric_rows(train_in_processes(tmp_path, "spec.json", n)) for n in (1, 2))
    assert [row["step"] for row in one] == [row["step"] for row in two] == list(range(1, 7))
    assert len({row["train_reward_mean"] for row in one}) > 1  # the answers change as the model learns
    for name in ("train_reward_mean", "train_reward_std", "train_completion_length", "train_loss", "train_kl"):
        assert [row[name] for row in two] == pytest.approx([row[name] for row in one], abs=1e-4), name
    valid = [[row.get("valid_reward_mean") for row in rows] for rows in (one, two)]
    assert valid[1] == pytest.approx(valid[0], abs=1e-4) and valid[0][3] is not None
