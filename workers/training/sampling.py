"""Sample answers while training: at each checkpoint the model answers a few fixed prompts
greedily, and the set is appended to samples.jsonl with its step and the time generation took.

The prompts are `training.sample_prompts`, or the first few of the validation file (else the
training file): a chat row's messages before its last assistant turn (with its tools, if it has
any), a preference row's input, a reinforcement row's whole conversation, or a row's `prompt`.
A method that grades answers (reinforcement) adds each answer's `reward` and `grades`, the row the
prompt came from being the grader's item (a given prompt's item is its messages alone).

Their work is bounded, whatever the options: they are counted in tokens when the trainer starts
(each prompt with its answer within the model's context, a whole set within MAX_SAMPLE_SET_TOKENS;
given prompts past either fail the job at once naming the field, default ones past them are left
out), and a run takes at most MAX_SAMPLE_SETS sets, at evenly spaced checkpoints and the last.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import DistributedType

from lmtune.layout import RunLayout
from lmtune.metrics_log import MetricsLog
from lmtune.spec import MAX_SAMPLE_SET_TOKENS, MAX_SAMPLE_SETS, JobSpec
from lmtune.tool_calls import Conversation, check_conversation
from workers.models.chat_format import conversation_prompt_ids, tool_format_of
from workers.models.errors import InvalidHyperparametersError
from workers.models.generation import GenerationParams, end_of_turn_ids, generate, prompt_ids

DEFAULT_PROMPTS = 3
SCANNED_LINES = 100  # where default prompts are looked for


Prompt = str | list[dict] | Conversation


def default_prompts(path: str | Path, count: int = DEFAULT_PROMPTS) -> list[tuple[Prompt, dict]]:
    """The first `count` prompts of a data file, each with the row it came from."""
    prompts: list[tuple[Prompt, dict]] = []
    with Path(path).open() as handle:
        for _, line in zip(range(SCANNED_LINES), handle):
            if len(prompts) == count:
                break
            if not line.strip():
                continue
            row = json.loads(line)
            if "input" in row:  # a preference row: its input, as the chat row of its preferred answer
                row = {**row["input"], "messages": [*row["input"]["messages"], *row["preferred_output"]]}
            if "prompt" in row:
                prompts.append((row["prompt"], row))
            elif "messages" in row:
                chat = check_conversation(
                    row["messages"],
                    row.get("tools"),
                    row.get("functions"),
                    row.get("parallel_tool_calls"),
                    training=False,
                )
                messages = chat.messages
                last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=0)
                if messages[-1]["role"] == "user":  # a reinforcement row: the whole conversation is the prompt
                    last = len(messages)
                if last > 0 and chat.uses_tools:  # the tools are offered as in training
                    prompts.append((Conversation(messages[:last], chat.tools, chat.parallel_tool_calls), row))
                elif last > 0:
                    prompts.append(([{"role": m["role"], "content": m["content"]} for m in messages[:last]], row))
    return prompts


def given_item(prompt: str | list[dict]) -> dict:
    """A given sample prompt as a grader's item: its messages, nothing else."""
    return {"messages": [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt}


GradeSamples = Callable[[list[dict], list[str]], list[dict]]  # (items, answers) -> fields added to each sample


class Sampler:
    """Only the main process generates; the unwrapped model answers, outside of data parallelism.
    A model sharded by FSDP would need every process to generate, so no samples are taken there.
    `grade`: the objective's grading of the answers (Objective.grade_samples)."""

    def __init__(
        self,
        spec: JobSpec,
        tokenizer,
        layout: RunLayout,
        accelerator: Accelerator,
        context: int | None,
        total_steps: int,
        grade: GradeSamples | None = None,
    ):
        training = spec.training
        given = training.sample_prompts is not None
        if given:
            prompts = [p if isinstance(p, str) else [m.model_dump() for m in p] for p in training.sample_prompts]
            pairs = [(prompt, given_item(prompt)) for prompt in prompts]
        else:
            pairs = default_prompts(spec.validation_file or spec.training_file)
        self.tokenizer, self.accelerator, self.grade = tokenizer, accelerator, grade
        self.params = GenerationParams(max_tokens=training.sample_max_tokens)
        kept = self._within_bounds([prompt for prompt, _ in pairs], context, strict=given)
        self.prompts, self.items = [pairs[i][0] for i in kept], [pairs[i][1] for i in kept]
        self.active = (
            bool(self.prompts) and accelerator.is_main_process and accelerator.distributed_type != DistributedType.FSDP
        )
        self.every = math.ceil(total_steps / MAX_SAMPLE_SETS)  # steps between sets, at least
        self.total_steps = total_steps
        self.log = MetricsLog(layout.samples)
        self.last_step = 0

    def _within_bounds(self, prompts: list, context: int | None, strict: bool) -> list[int]:
        """The positions of the prompts whose tokens fit: each with its answer in the context, all in
        one set's budget. A given prompt that does not fit is an error naming it; a default one is
        left out."""
        answer = self.params.max_tokens
        kept, used = [], 0
        for index, prompt in enumerate(prompts):
            tokens = len(self._prompt_ids(prompt))
            problem = None
            if context and tokens + answer > context:
                problem = (
                    f"is {tokens:,} tokens, which with sample_max_tokens ({answer:,}) is more than the model's "
                    f"context of {context:,} tokens"
                )
            elif used + tokens + answer > MAX_SAMPLE_SET_TOKENS:
                problem = (
                    f"brings the sample set to {used + tokens + answer:,} tokens (prompts, plus sample_max_tokens "
                    f"for each answer), more than the {MAX_SAMPLE_SET_TOKENS:,} allowed; use fewer or shorter "
                    "prompts, or a lower sample_max_tokens"
                )
            if problem and strict:
                raise InvalidHyperparametersError(
                    f"training.sample_prompts.{index} {problem}", param=f"training.sample_prompts.{index}"
                )
            if not problem:
                kept.append(index)
                used += tokens + answer
        return kept

    def starting_at(self, step: int) -> Sampler:
        """From a run's first step (0, or the checkpoint it resumes at): sets past it come again."""
        self.last_step = step
        if self.accelerator.is_main_process:
            self.log.truncate_after(step)
        return self

    def at_checkpoint(self, model, step: int) -> None:
        # a set when a multiple of `every` steps was passed since the last checkpoint, and at the end
        due = step // self.every > self.last_step // self.every or step >= self.total_steps
        self.last_step = step
        if not (self.active and due):
            return
        model = self.accelerator.unwrap_model(model)
        stop_ids = end_of_turn_ids(self.tokenizer)
        started = time.monotonic()
        model.eval()
        try:
            with self.accelerator.autocast():
                answers = [self._answer(model, prompt, stop_ids) for prompt in self.prompts]
        finally:
            model.train()
        seconds = round(time.monotonic() - started, 3)
        if self.grade is not None:
            for answer, fields in zip(answers, self.grade(self.items, [a["completion"] for a in answers])):
                answer.update(fields)
        self.log.append(
            {
                "step": step,
                "created_at": int(time.time()),
                "generation_seconds": seconds,
                "samples": answers,
            }
        )

    def _prompt_ids(self, prompt: Prompt) -> list[int]:
        if isinstance(prompt, Conversation):
            return conversation_prompt_ids(self.tokenizer, prompt, tool_format_of(self.tokenizer), offer_tools=True)
        return prompt_ids(self.tokenizer, prompt)

    def _answer(self, model, prompt: Prompt, stop_ids: list[int]) -> dict:
        ids = self._prompt_ids(prompt)
        [choice] = generate(model, self.tokenizer, ids, self.params, stop_ids=stop_ids)
        shown = (
            {"prompt": prompt.messages, "tools": prompt.tools}
            if isinstance(prompt, Conversation)
            else {"prompt": prompt}
        )
        return {
            **shown,
            "completion": choice.text,
            "completion_tokens": choice.tokens,
            "finish_reason": choice.finish_reason,
        }
