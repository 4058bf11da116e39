"""Sample answers while training: at each checkpoint the model answers a few fixed prompts
greedily, and the set is appended to samples.jsonl with its step and the time generation took.

The prompts are `training.sample_prompts`, or the first few of the validation file (else the
training file): a chat row's messages before its last assistant turn (with its tools, if it has
any), or a row's `prompt`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import DistributedType

from lmtune.layout import RunLayout
from lmtune.metrics_log import MetricsLog
from lmtune.spec import JobSpec
from lmtune.tool_calls import Conversation, check_conversation
from workers.models.chat_format import conversation_prompt_ids, tool_format_of
from workers.models.generation import GenerationParams, end_of_turn_ids, generate, prompt_ids

DEFAULT_PROMPTS = 3
SCANNED_LINES = 100  # where default prompts are looked for


def default_prompts(path: str | Path, count: int = DEFAULT_PROMPTS) -> list[str | list[dict] | Conversation]:
    prompts: list[str | list[dict] | Conversation] = []
    with Path(path).open() as handle:
        for _, line in zip(range(SCANNED_LINES), handle):
            if len(prompts) == count:
                break
            if not line.strip():
                continue
            row = json.loads(line)
            if "prompt" in row:
                prompts.append(row["prompt"])
            elif "messages" in row:
                chat = check_conversation(
                    row["messages"], row.get("tools"), row.get("functions"), row.get("parallel_tool_calls")
                )
                messages = chat.messages
                last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=0)
                if last > 0 and chat.uses_tools:  # the tools are offered as in training
                    prompts.append(Conversation(messages[:last], chat.tools, chat.parallel_tool_calls))
                elif last > 0:
                    prompts.append([{"role": m["role"], "content": m["content"]} for m in messages[:last]])
    return prompts


class Sampler:
    """Only the main process generates; the unwrapped model answers, outside of data parallelism.
    A model sharded by FSDP would need every process to generate, so no samples are taken there."""

    def __init__(self, spec: JobSpec, tokenizer, layout: RunLayout, accelerator: Accelerator, start_step: int):
        settings = spec.training
        if settings.sample_prompts is not None:
            self.prompts = [p if isinstance(p, str) else [m.model_dump() for m in p] for p in settings.sample_prompts]
        else:
            self.prompts = default_prompts(spec.validation_file or spec.training_file)
        self.active = (
            bool(self.prompts) and accelerator.is_main_process and accelerator.distributed_type != DistributedType.FSDP
        )
        self.tokenizer, self.accelerator = tokenizer, accelerator
        self.params = GenerationParams(max_tokens=settings.sample_max_tokens)
        self.log = MetricsLog(layout.samples)
        if accelerator.is_main_process:  # sets past the step this run starts at (0 without a checkpoint) come again
            self.log.truncate_after(start_step)

    def at_checkpoint(self, model, step: int) -> None:
        if not self.active:
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
        self.log.append(
            {
                "step": step,
                "created_at": int(time.time()),
                "generation_seconds": round(time.monotonic() - started, 3),
                "samples": answers,
            }
        )

    def _answer(self, model, prompt: str | list[dict] | Conversation, stop_ids: list[int]) -> dict:
        if isinstance(prompt, Conversation):
            ids = conversation_prompt_ids(self.tokenizer, prompt, tool_format_of(self.tokenizer), offer_tools=True)
            shown = {"prompt": prompt.messages, "tools": prompt.tools}
        else:
            ids, shown = prompt_ids(self.tokenizer, prompt), {"prompt": prompt}
        [choice] = generate(model, self.tokenizer, ids, self.params, stop_ids=stop_ids)
        return {
            **shown,
            "completion": choice.text,
            "completion_tokens": choice.tokens,
            "finish_reason": choice.finish_reason,
        }
