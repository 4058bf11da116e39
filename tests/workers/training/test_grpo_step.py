"""GRPO steps on the tiny model, outside the loop: a graded task's mean reward rises, the KL to the
starting model is measured, and a prompt that leaves no room for its answer fails the job at start."""

import copy

import pytest
import torch
from pydantic import TypeAdapter
from transformers import AutoModelForCausalLM, AutoTokenizer

from lmtune.graders import Tools
from lmtune.graders.schema import Grader
from lmtune.reinforcement import GrpoOptions, ReinforcementHyperparameters, resolve
from workers.training.errors import InvalidDataError
from workers.training.objectives.grpo_step import GrpoStep, check_prompt_lengths

DIGITS = TypeAdapter(Grader).validate_python(
    {
        "type": "python",
        "name": "digits",
        "source": "def grade(sample, item):\n    t = sample['output_text']\n    return sum(c.isdigit() for c in t) / max(len(t), 1)\n",
    }
)
ROWS = [{"messages": [{"role": "user", "content": f"Say a number {i}"}]} for i in range(4)]


def grpo(tiny_model, **options) -> tuple:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    grpo_options = GrpoOptions(group_size=8, max_completion_tokens=12, **options)
    resolved = resolve(ReinforcementHyperparameters(), grpo_options)
    reference = copy.deepcopy(model).eval() if grpo_options.beta else None
    step = GrpoStep(
        grpo_options,
        resolved,
        DIGITS,
        Tools(),
        AutoTokenizer.from_pretrained(tiny_model),
        torch.device("cpu"),
        0,
        reference_model=reference,
    )
    return model, step


def train(model, step: GrpoStep, steps: int) -> list[dict]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    history = []
    rows = list(enumerate(ROWS))
    for index in range(steps):
        data = step.rollout(model, index, [rows[:2], rows[2:], []])  # two micro-batches and an empty one
        outs = [step.loss(model, micro) for micro in data.micro_batches]
        assert outs[-1].units == 0 and outs[-1].loss.item() == 0.0
        step_units = sum(out.units for out in outs)
        for out in outs:
            (out.loss / step_units).backward()
        optimizer.step()
        optimizer.zero_grad()
        kl = sum(out.kl.item() for out in outs) / sum(out.tokens for out in outs)
        history.append({**data.rollouts.reward_stats(), "kl": kl})
    return history


def test_the_mean_reward_rises_on_a_graded_task(tiny_model):
    model, step = grpo(tiny_model)
    before = step.evaluate(model, ROWS).rewards.mean().item()
    history = train(model, step, 15)
    rewards = [row["reward_mean"] for row in history]
    # a random model writes a digit about one character in 25; GRPO makes digits its habit
    assert sum(rewards[:3]) / 3 < 0.2 and sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3 + 0.3
    assert step.evaluate(model, ROWS).rewards.mean().item() > before


def test_with_beta_the_kl_to_the_starting_model_is_measured_and_grows(tiny_model):
    model, step = grpo(tiny_model, beta=0.04)
    history = train(model, step, 6)
    assert history[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # the first step is the starting model
    assert history[-1]["kl"] > 1e-4


def test_a_prompt_without_room_for_its_answer_is_refused_at_start(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    long_row = {"messages": [{"role": "user", "content": "x" * 100}]}
    with pytest.raises(
        InvalidDataError, match=r"training_file: row 2's prompt has \d+ tokens; with answers of up to 12"
    ):
        check_prompt_lengths(tokenizer, [ROWS[0], long_row], "training_file", 64, answer_tokens=12)
    check_prompt_lengths(tokenizer, [ROWS[0], long_row], "training_file", 512, answer_tokens=12)
