"""GRPO's rollouts: each prompt answered `group_size` times by the current policy in one batched,
KV-cached `generate()` (workers/models/generation.py), from a random stream of its own that a
checkpoint saves, and every answer graded by the job's grader in one batch (lmtune/graders).
"""

from __future__ import annotations

import base64
import contextlib
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from lmtune.graders import Grade, Tools, grade_batch, sample_namespace
from workers.models.generation import GenerationParams, generate_batch


class SamplingRng:
    """The random stream answers are sampled from. transformers' `generate()` draws from torch's
    global generator and takes no other, so each sampling runs inside `fork_rng` with this stream's
    state, which is kept apart from dropout's and saved with a checkpoint: a run resumed after a
    crash samples the very answers it would have sampled."""

    def __init__(self, seed: int, device: torch.device):
        self.device = device
        with self.active(seed=seed):
            pass

    @contextlib.contextmanager
    def active(self, *, seed: int | None = None) -> Iterator[None]:
        cuda = self.device.type == "cuda"
        with torch.random.fork_rng(devices=[self.device] if cuda else [], device_type="cuda" if cuda else "cpu"):
            if seed is not None:
                torch.manual_seed(seed)
            else:
                self._restore()
            yield
            self.cpu_state = torch.get_rng_state()
            self.cuda_state = torch.cuda.get_rng_state(self.device) if cuda else None

    def _restore(self) -> None:
        torch.set_rng_state(self.cpu_state)
        if self.cuda_state is not None:
            torch.cuda.set_rng_state(self.cuda_state, self.device)

    def state_dict(self) -> dict:
        """JSON-ready, for the checkpoint's trainer state."""
        encode = lambda state: None if state is None else base64.b64encode(state.numpy().tobytes()).decode()  # noqa: E731
        return {"cpu": encode(self.cpu_state), "cuda": encode(self.cuda_state)}

    def load_state_dict(self, state: dict) -> None:
        decode = lambda text: torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)  # noqa: E731
        self.cpu_state = decode(state["cpu"])
        self.cuda_state = decode(state["cuda"]) if state.get("cuda") and self.device.type == "cuda" else None


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
    rng: SamplingRng,
    *,
    stop_ids: list[int] | None = None,
    max_rows: int = 64,
) -> Rollouts:
    """`group_size` answers to each prompt, sampled `max_rows` at a time (memory: the KV cache of
    max_rows answers)."""
    repeated = [list(prompt) for prompt in prompts for _ in range(group_size)]
    choices, started = [], time.monotonic()
    was_training = model.training
    model.eval()  # no dropout while sampling; the sampler's draws come from its own stream
    try:
        with rng.active():
            for start in range(0, len(repeated), max_rows):
                choices += generate_batch(
                    model, tokenizer, repeated[start : start + max_rows], params, stop_ids=stop_ids
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
