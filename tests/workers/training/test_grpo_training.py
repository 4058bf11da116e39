"""Reinforcement fine-tuning through the trainer's loop on the tiny model: the graded reward rises,
every metric a user reads is reported, the validation reward is measured every eval_interval steps,
a run resumed from a checkpoint samples the very answers of an uninterrupted one, and bad rows fail
the job naming their line."""

import json
import shutil

import pytest

from lmtune.layout import RunLayout
from lmtune.spec import parse_spec
from tests.helpers import metric_rows
from workers.training.errors import InvalidDataError
from workers.training.loop import train

DIGITS = {
    "type": "python",
    "name": "digits",
    "source": "def grade(sample, item):\n    t = sample['output_text']\n    return sum(c.isdigit() for c in t) / max(len(t), 1)\n",
}
MULTI = {
    "type": "multi",
    "name": "both",
    "graders": {
        "digits": DIGITS,
        "topic": {
            "type": "string_check",
            "name": "topic",
            "input": "{{item.topic}}",
            "reference": "numbers",
            "operation": "eq",
        },
    },
    "calculate_output": "0.9 * digits + 0.1 * topic",
}


def write_rows(path, count: int) -> str:
    rows = [{"messages": [{"role": "user", "content": f"Say a number {i}"}], "topic": "numbers"} for i in range(count)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def spec(tiny_model, tmp_path, *, grader=DIGITS, steps=12, **training):
    return parse_spec(
        {
            "model": str(tiny_model),
            "training_file": write_rows(tmp_path / "train.jsonl", 16),
            "validation_file": write_rows(tmp_path / "valid.jsonl", 6),
            "seed": 3,
            "method": {
                "type": "reinforcement",
                "reinforcement": {
                    "grader": grader,
                    "hyperparameters": {"n_epochs": 10, "batch_size": 4, "eval_interval": 4, "eval_samples": 4},
                },
            },
            "training": {
                "learning_rate": 1e-2,
                "lr_scheduler": "constant",
                "max_steps": steps,
                "sample_prompts": [],
                "grpo": {"group_size": 8, "max_completion_tokens": 12},
                **training,
            },
        }
    )


def test_the_reward_rises_and_every_metric_is_reported(tiny_model, tmp_path):
    train(spec(tiny_model, tmp_path, grader=MULTI, gradient_accumulation_steps=2), tmp_path / "run")
    rows = metric_rows(tmp_path / "run")
    assert [row["step"] for row in rows] == list(range(1, 13))
    rewards = [row["train_reward_mean"] for row in rows]
    assert sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3 + 0.2  # digits became the model's habit
    first = rows[0]
    for column in ("train_loss", "train_reward_std", "train_completion_length", "train_clip_ratio"):
        assert column in first
    assert first["train_reward_topic_mean"] == 1.0  # every row's topic is "numbers"
    assert 0 < first["train_reward_digits_mean"] < 1
    assert 1 <= first["train_completion_length"] <= 12 and first["train_grading_errors"] == 0
    assert first["train_generation_seconds"] > 0 and first["train_grading_seconds"] > 0
    assert "train_kl" not in first  # no KL term without beta
    # the validation reward every eval_interval (4) steps and at the last
    assert [row["step"] for row in rows if "valid_reward_mean" in row] == [4, 8, 12]
    assert not any("full_valid_reward_mean" in row for row in rows)


def test_the_sample_answers_carry_their_reward_and_each_graders_score(tiny_model, tmp_path):
    job = spec(tiny_model, tmp_path, grader=MULTI, steps=2, sample_max_tokens=12)
    job = job.model_copy(update={"training": job.training.model_copy(update={"sample_prompts": None})})
    train(job, tmp_path / "run")
    sets = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    samples = sets[-1]["samples"]
    assert len(samples) == 3  # the first validation rows, whole conversations
    for sample in samples:
        text = sample["completion"]
        digits = sum(c.isdigit() for c in text) / max(len(text), 1)
        assert sample["grades"] == pytest.approx({"digits": digits, "topic": 1.0})
        assert sample["reward"] == pytest.approx(0.9 * digits + 0.1)


def test_with_beta_the_kl_to_the_starting_model_is_reported(tiny_model, tmp_path):
    train(
        spec(tiny_model, tmp_path, steps=4, grpo={"group_size": 4, "max_completion_tokens": 8, "beta": 0.04}),
        tmp_path / "run",
    )
    kls = [row["train_kl"] for row in metric_rows(tmp_path / "run")]
    assert kls[0] == pytest.approx(0.0, abs=1e-6) and kls[-1] > 0


def test_a_resumed_run_samples_the_answers_of_an_uninterrupted_one(tiny_model, tmp_path):
    job = spec(tiny_model, tmp_path, steps=6, checkpoint_every_steps=3, keep_checkpoints=5)
    train(job, tmp_path / "reference")
    reference = metric_rows(tmp_path / "reference")

    # the run as a crash after step 3's checkpoint leaves it
    shutil.copytree(tmp_path / "reference", tmp_path / "run")
    layout = RunLayout(tmp_path / "run")
    layout.result.unlink()
    shutil.rmtree(layout.final)
    shutil.rmtree(layout.checkpoints / "step-000006")
    train(job, tmp_path / "run")

    resumed = metric_rows(tmp_path / "run")
    for ours, theirs in zip(resumed[3:], reference[3:], strict=True):
        assert ours["train_reward_mean"] == theirs["train_reward_mean"]
        assert ours["train_completion_length"] == theirs["train_completion_length"]
        assert ours["train_loss"] == pytest.approx(theirs["train_loss"], abs=1e-6)


def test_rows_the_grader_cannot_read_fail_the_job_naming_the_line(tiny_model, tmp_path):
    grader = {**MULTI["graders"]["topic"], "input": "{{item.subject}}"}
    with pytest.raises(InvalidDataError, match=r"line 1: the grader reads \{\{item.subject\}\}") as caught:
        train(spec(tiny_model, tmp_path, grader=grader), tmp_path / "run")
    assert caught.value.param == "training_file"
