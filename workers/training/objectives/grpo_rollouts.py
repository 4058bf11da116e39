"""GRPO's rollouts: each prompt answered `group_size` times by the current policy in one batched,
KV-cached `generate()` (workers/models/generation.py), each answer drawn from a seed of its own
(`answer_seed`), and every answer graded by the job's grader in one batch (lmtune/graders).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from transformers import LogitsProcessor, TopPLogitsWarper

from lmtune.graders import Grade, Tools, grade_batch, sample_namespace
from workers.models.generation import GenerationParams, generate_batch

SEED_MODULUS = 2**63 - 25  # a prime below torch's seed range


def answer_seed(job_seed: int, step: int, row: int, answer: int) -> int:
    """The seed of one answer: of the job's seed, the 0-based step, the row's place in the training
    file and the answer's place in its group, and of nothing else (not the process, the micro-batch
    nor the batch it is generated in): a run resumed after a crash, or run with another number of
    processes, samples the very same answers."""
    seed = 0
    for part in (job_seed, step, row, answer):
        seed = (seed * 1_000_003 + part + 1) % SEED_MODULUS
    return seed


class SeededSampling(LogitsProcessor):
    """Sampling at `temperature` within `top_p`, each row from a generator of its own: the Gumbel-max
    draw (the highest of the scaled log-probabilities each minus the log of an exponential variate is
    a draw from their softmax), which greedy decoding then picks. A row's t-th token uses its
    generator's t-th draw, whatever the other rows of the batch."""

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float, device: torch.device):
        self.generators = [torch.Generator(device=device).manual_seed(seed) for seed in seeds]
        self.temperature = temperature
        self.nucleus = TopPLogitsWarper(top_p) if top_p < 1 else None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        scores = scores.float() / self.temperature
        if self.nucleus is not None:
            scores = self.nucleus(input_ids, scores)
        draws = torch.empty_like(scores)
        for row, generator in zip(draws, self.generators):
            row.exponential_(generator=generator)
        return scores - draws.log()


@dataclass
class Rollouts:
    """A batch of answers, `group_size` consecutive ones per prompt, with their grades."""

    prompt_ids: list[list[int]]  # one per answer (a group repeats its prompt)
    answer_ids: list[list[int]]  # each answer's tokens, its stop token included when it stopped
    texts: list[str]
    truncated: list[bool]  # ran out of max_completion_tokens
    grades: list[Grade] = field(default_factory=list)
    generation_seconds: float = 0.0
    grading_seconds: float = 0.0

    @property
    def rewards(self) -> torch.Tensor:
        return torch.tensor([grade.score for grade in self.grades], dtype=torch.float32)

    def reward_stats(self) -> dict[str, float]:
        """The mean and spread of the reward, and of each sub-grader's score (multi graders)."""
        stats = {
            "reward_mean": _mean([g.score for g in self.grades]),
            "reward_std": _std([g.score for g in self.grades]),
        }
        for name in self.grades[0].sub_scores if self.grades else ():
            stats[f"reward_{name}_mean"] = _mean([g.sub_scores.get(name, 0.0) for g in self.grades])
        stats["grading_errors"] = float(sum(grade.failed for grade in self.grades))
        return stats

    def length_stats(self) -> dict[str, float]:
        lengths = [len(ids) for ids in self.answer_ids]
        return {
            "completion_length_mean": _mean(lengths),
            "completion_length_max": float(max(lengths, default=0)),
            "truncated_ratio": _mean([float(t) for t in self.truncated]),
        }


def sample_groups(
    model,
    tokenizer,
    prompts: Sequence[list[int]],
    group_size: int,
    params: GenerationParams,
    seeds: Sequence[int] = (),
    *,
    stop_ids: list[int] | None = None,
    max_rows: int = 64,
) -> Rollouts:
    """`group_size` answers to each prompt, sampled `max_rows` at a time (memory: the KV cache of
    max_rows answers); answer i from `seeds[i]` (SeededSampling), or greedy at temperature 0."""
    repeated = [list(prompt) for prompt in prompts for _ in range(group_size)]
    choices, started = [], time.monotonic()
    greedy = GenerationParams(max_tokens=params.max_tokens)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()  # no dropout while sampling
    try:
        for start in range(0, len(repeated), max_rows):
            sampling = None
            if params.temperature > 0:
                sampling = SeededSampling(seeds[start : start + max_rows], params.temperature, params.top_p, device)
            choices += generate_batch(
                model,
                tokenizer,
                repeated[start : start + max_rows],
                greedy,
                stop_ids=stop_ids,
                logits_processor=sampling,
            )
    finally:
        model.train(was_training)
    return Rollouts(
        prompt_ids=repeated,
        answer_ids=[choice.token_ids for choice in choices],
        texts=[choice.text for choice in choices],
        truncated=[choice.finish_reason == "length" for choice in choices],
        generation_seconds=time.monotonic() - started,
    )


def grade_rollouts(rollouts: Rollouts, items: Sequence[dict], group_size: int, grader, tools: Tools) -> None:
    """Grade every answer against its row (`items`, one per prompt) in one batch."""
    pairs = [(sample_namespace(text), items[index // group_size]) for index, text in enumerate(rollouts.texts)]
    started = time.monotonic()
    rollouts.grades = grade_batch(grader, pairs, tools)
    rollouts.grading_seconds = time.monotonic() - started


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _std(values: Sequence[float]) -> float:
    if len(values) < 2:
        return 0.0
    mean = _mean(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
