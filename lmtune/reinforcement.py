"""Reinforcement fine-tuning's inputs: OpenAI's `method: {type: "reinforcement", reinforcement:
{grader, hyperparameters}}`, lmtune's GRPO options, what each "auto" means here, and the check of
the rows (docs/rft.md).

A row is a conversation that ends with the user's message, plus any fields the grader reads as
`{{item.*}}`: `{"messages": [{"role": "user", "content": "2+2?"}], "answer": "4"}`. The model answers
it several times (a group), the grader scores each answer, and GRPO moves the model towards the
answers that scored above their group's mean.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from lmtune.bounds import BatchSize, Epochs, LrMultiplier, auto_or_number
from lmtune.graders import templates
from lmtune.graders.schema import (
    Grader,
    LabelModelGrader,
    MultiGrader,
    ScoreModelGrader,
    StringCheckGrader,
    TextSimilarityGrader,
)
from lmtune.tool_calls import check_conversation
from lmtune.training_data import MIN_EXAMPLES, DatasetError, Row, check_lines, check_supervised_row, iter_rows

# What "auto" and the reasoning effort mean here (docs/rft.md)
BASE_GROUP_SIZE = 4  # answers sampled per prompt at compute_multiplier 1
MAX_GROUP_SIZE = 64
ANSWER_TOKENS = {"low": 64, "default": 128, "medium": 256, "high": 512}  # reasoning_effort -> max answer tokens
AUTO_EVAL_INTERVAL = 10
AUTO_EVAL_SAMPLES = 32
# GRPO moves a policy much less per step than supervised training does (TRL's default is 1e-6)

ComputeMultiplier = auto_or_number(float, 0, 16, low_exclusive=True)
EvalInterval = auto_or_number(int, 1, 1_000_000)
EvalSamples = auto_or_number(int, 1, 100_000)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReinforcementHyperparameters(_Strict):
    """OpenAI's reinforcement hyperparameters, each "auto" or a value."""

    n_epochs: Epochs = "auto"
    batch_size: BatchSize = "auto"
    """Prompts per optimizer step; each is answered `group_size` times."""
    learning_rate_multiplier: LrMultiplier = "auto"
    compute_multiplier: ComputeMultiplier = "auto"
    """Scales the answers sampled per prompt: round(4 x multiplier), at least 2 (auto: 1)."""
    eval_interval: EvalInterval = "auto"
    """Steps between evaluations of the mean reward on validation rows (auto: 10)."""
    eval_samples: EvalSamples = "auto"
    """Validation rows each evaluation answers (greedily) and grades (auto: 32, at most the file's rows)."""
    reasoning_effort: Literal["auto", "default", "low", "medium", "high"] = "auto"
    """No lmtune model reasons apart from its answer: the effort is the answer's token budget
    (low 64, default and auto 128, medium 256, high 512)."""


class GrpoOptions(_Strict):
    """lmtune's own options of the GRPO objective, all optional; named as TRL's GRPOConfig names them."""

    group_size: int | None = Field(None, ge=2, le=MAX_GROUP_SIZE)
    """Answers sampled per prompt; wins over compute_multiplier."""
    max_completion_tokens: int | None = Field(None, ge=1, le=4096)
    """The longest answer, in tokens; wins over reasoning_effort."""
    temperature: float = Field(1.0, gt=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    beta: float = Field(0.0, ge=0, le=10, allow_inf_nan=False)
    """The KL penalty's coefficient against the starting model (0: no KL term and no reference model)."""
    epsilon: float = Field(0.2, gt=0, lt=1)
    """The policy ratio is clipped to [1 - epsilon, 1 + epsilon_high]."""
    epsilon_high: float | None = Field(None, gt=0, lt=10)
    """The upper clip (DAPO's "clip higher"); default: epsilon."""
    loss_type: Literal["dapo", "grpo", "bnpo", "dr_grpo"] = "dapo"
    """How token losses are averaged: dapo over all tokens of the step, grpo per answer then over
    answers, bnpo over the micro-batch's tokens, dr_grpo over answers x max_completion_tokens."""
    scale_rewards: Literal["group", "batch", "none"] = "group"
    """Advantages are (reward - group mean), divided by the std of the group, the batch, or nothing."""


class ReinforcementOptions(_Strict):
    grader: Grader
    hyperparameters: ReinforcementHyperparameters = ReinforcementHyperparameters()


class ResolvedReinforcement(_Strict):
    """What a reinforcement run uses beyond the step plan, after every "auto" is decided."""

    group_size: int
    max_completion_tokens: int
    eval_interval: int
    eval_samples: int  # at most the validation file's rows are taken


def resolve(hyperparameters: ReinforcementHyperparameters, options: GrpoOptions) -> ResolvedReinforcement:
    hp = hyperparameters
    multiplier = 1.0 if hp.compute_multiplier == "auto" else hp.compute_multiplier
    group_size = options.group_size or min(MAX_GROUP_SIZE, max(2, round(BASE_GROUP_SIZE * multiplier)))
    effort = "default" if hp.reasoning_effort == "auto" else hp.reasoning_effort
    eval_samples = AUTO_EVAL_SAMPLES if hp.eval_samples == "auto" else hp.eval_samples
    return ResolvedReinforcement(
        group_size=group_size,
        max_completion_tokens=options.max_completion_tokens or ANSWER_TOKENS[effort],
        eval_interval=AUTO_EVAL_INTERVAL if hp.eval_interval == "auto" else hp.eval_interval,
        eval_samples=eval_samples,
    )


# ---- the rows ----


def item_references(grader) -> list[str]:
    """The `item.*` paths the grader's templates read (a python grader reads its item in code: none)."""
    if isinstance(grader, MultiGrader):
        return list(dict.fromkeys(ref for sub in grader.graders.values() for ref in item_references(sub)))
    if isinstance(grader, StringCheckGrader | TextSimilarityGrader):
        texts = [grader.input, grader.reference]
    elif isinstance(grader, ScoreModelGrader | LabelModelGrader):
        texts = [message.text() for message in grader.input]
    else:
        texts = []
    found = [ref for text in texts for ref in templates.variables(text)]
    return list(dict.fromkeys(ref for ref in found if templates.namespace(ref) == "item"))


def check_prompt_row(data: object, references: Iterable[str] = ()) -> tuple[str, dict]:
    """One reinforcement row: a conversation ending with the user's message, and every field the
    grader reads. Raises ValueError saying what is wrong."""
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    if "messages" not in data:
        raise ValueError('a reinforcement row needs "messages": the conversation the model answers')
    if "tools" in data or "functions" in data:
        raise ValueError("tools are not supported in reinforcement rows yet; remove tools/functions")
    messages = check_conversation(data["messages"], training=False).messages
    last = messages[-1]
    if last["role"] != "user":
        raise ValueError(
            f'the last message must be the user\'s (the model answers it), got "{last["role"]}"; '
            "drop the assistant's answer: the grader judges the model's own"
        )
    if not last.get("content"):
        raise ValueError("the last message (the user's) has no content")
    for reference in references:
        try:
            templates.lookup(reference, {"item": data})
        except templates.VariableError:
            raise ValueError(
                f"the grader reads {{{{{reference}}}}}, which this row does not have; "
                f'add "{reference.removeprefix("item.").split(".")[0].split("[")[0]}" to every row'
            ) from None
    return "prompt", data


def check_upload_row(data: object) -> tuple[str, dict]:
    """A fine-tune upload's row: supervised training's shapes, or a reinforcement prompt (the
    grader's fields are checked when a job names the file)."""
    try:
        return check_supervised_row(data)
    except ValueError as supervised:
        try:
            return check_prompt_row(data)
        except ValueError:
            raise supervised from None


def check_prompt_lines(lines: Iterable, grader, min_examples: int = MIN_EXAMPLES) -> Iterator[Row]:
    """The rows of a reinforcement file, each checked; DatasetError naming the bad lines at the end."""
    references = item_references(grader)
    yield from check_lines(lines, min_examples, lambda data: check_prompt_row(data, references))


def check_prompt_file(path: str | Path, grader, min_examples: int = MIN_EXAMPLES) -> Iterator[Row]:
    """The rows of a reinforcement file, streamed and checked as `check_prompt_lines` does."""
    references = item_references(grader)
    yield from iter_rows(path, min_examples, lambda data: check_prompt_row(data, references))


__all__ = [
    "DatasetError",
    "GrpoOptions",
    "ReinforcementHyperparameters",
    "ReinforcementOptions",
    "ResolvedReinforcement",
    "check_prompt_file",
    "check_prompt_lines",
    "check_prompt_row",
    "check_upload_row",
    "item_references",
    "resolve",
]
