"""Model graders' judge inside a process that trains (lmtune.graders.Judge): reinforcement
fine-tuning's rewards and training.eval_id's scores at each evaluation, where no database nor model
server is at hand. The worker resolved each judge to a folder or hub id in the trainer's spec
(workers/job_inputs.py: a LoRA checkpoint merged into its base); each is loaded once, beside the
model in training, and the calls of a grading batch are answered together in one KV-cached
generation (generation.py), `BATCH_ROWS` at a time.

A judge that samples (temperature above 0) draws from torch's generator inside `fork_rng`, seeded
with the grader's `seed` when it has one: the trainer's own random streams are left as they were.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from transformers import AutoModelForCausalLM

from lmtune.graders import JudgeAnswer, JudgeCall
from workers.models.errors import ModelLoadError
from workers.models.generation import GenerationParams, end_of_turn_ids, generate_batch, prompt_ids
from workers.models.loading import cannot_load, load_tokenizer

BATCH_ROWS = 16  # judge prompts answered together: the KV cache of 16 answers


class LocalJudge:
    def __init__(self, device: torch.device):
        self.device = device
        cuda = device.type == "cuda"
        self.dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
        self._loaded: dict[str, tuple] = {}

    def load(self, source: str, param: str | None = None) -> None:
        """The judge at `source` in memory (at the trainer's start, so that one that cannot load fails
        the job before any step); ModelLoadError saying why, naming the field `param`."""
        if source in self._loaded:
            return
        try:
            tokenizer = load_tokenizer(source)
            model = AutoModelForCausalLM.from_pretrained(source, dtype=self.dtype)
        except ModelLoadError as error:
            raise ModelLoadError(f"{param}: a model grader's judge: {error}", param=param) from None
        except (OSError, ValueError) as error:
            message = cannot_load(source, source, error)
            raise ModelLoadError(f"{param}: a model grader's judge: {message}", param=param) from None
        model.to(self.device).eval().requires_grad_(False)
        self._loaded[source] = (model, tokenizer, end_of_turn_ids(tokenizer))

    def complete(self, model: str, calls: list[JudgeCall]) -> list[JudgeAnswer]:
        self.load(model)
        judge, tokenizer, stop_ids = self._loaded[model]
        context = getattr(judge.config, "max_position_embeddings", None) or 1 << 30
        answers = [JudgeAnswer() for _ in calls]
        alike = defaultdict(list)  # calls with the same sampling settings are generated together
        for index, call in enumerate(calls):
            ids = prompt_ids(tokenizer, call.messages)
            if len(ids) + call.max_tokens > context:
                answers[index].error = (
                    f"the judge prompt ({len(ids)} tokens) and its {call.max_tokens} answer tokens pass the "
                    f"judge's context of {context} tokens"
                )
                continue
            answers[index].prompt_tokens = len(ids)
            alike[(call.max_tokens, call.temperature, call.top_p, call.seed)].append((index, ids))
        cuda = self.device.type == "cuda"
        for (max_tokens, temperature, top_p, seed), rows in alike.items():
            params = GenerationParams(max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed)
            for start in range(0, len(rows), BATCH_ROWS):
                chunk = rows[start : start + BATCH_ROWS]
                with torch.random.fork_rng(devices=[self.device] if cuda else [], device_type=self.device.type):
                    choices = generate_batch(judge, tokenizer, [ids for _, ids in chunk], params, stop_ids=stop_ids)
                for (index, _), choice in zip(chunk, choices):
                    answers[index].text, answers[index].completion_tokens = choice.text, choice.tokens
        return answers
