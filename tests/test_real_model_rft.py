"""Reinforcement fine-tuning moves a real pretrained model (SmolLM2-135M-Instruct, its own tokenizer
and chat template, a LoRA adapter) towards what its grader rewards, on a CPU within 14 steps (the issue allows 30): asked
for a colour, it comes to answer "blue" more often than it did."""

import json

import pytest

from lmtune.spec import parse_spec
from tests.helpers import metric_rows
from workers.training.loop import train

pytestmark = pytest.mark.slow  # trains a real model

ASKED = (
    "Name a colour.",
    "What colour do you like?",
    "Pick a colour for a car.",
    "Tell me one colour.",
    "Which colour should I paint my door?",
    "Say a colour.",
    "What is a nice colour for a shirt?",
    "Give me a colour.",
    "What colour is your favourite?",
    "Suggest a colour for a bedroom.",
    "Choose a colour for a flag.",
    "One colour, please.",
)


def rows(path, questions) -> str:
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": q}]}) + "\n" for q in questions))
    return str(path)


def test_the_mean_reward_rises_within_14_steps_on_smollm2(smollm2, tmp_path):
    spec = parse_spec(
        {
            "model": str(smollm2),
            "training_file": rows(tmp_path / "train.jsonl", ASKED),
            "validation_file": rows(tmp_path / "valid.jsonl", ASKED[:2]),
            "seed": 1,
            "method": {
                "type": "reinforcement",
                "reinforcement": {
                    "grader": {
                        "type": "string_check",
                        "name": "blue",
                        "input": "{{sample.output_text}}",
                        "reference": "blue",
                        "operation": "ilike",
                    },
                    "hyperparameters": {"n_epochs": 8, "batch_size": 2, "eval_interval": 1000},
                },
            },
            "training": {
                "learning_rate": 2e-3,
                "lr_scheduler": "constant",
                "max_steps": 14,
                "lora": {"r": 8, "alpha": 16},
                "checkpoint_every_steps": 1000,
                "sample_prompts": [],
                "grpo": {"group_size": 4, "max_completion_tokens": 12},
            },
        }
    )
    train(spec, tmp_path / "run")
    rewards = [row["train_reward_mean"] for row in metric_rows(tmp_path / "run")]
    assert len(rewards) == 14
    first, last = sum(rewards[:4]) / 4, sum(rewards[-4:]) / 4
    assert last > first + 0.3, rewards
