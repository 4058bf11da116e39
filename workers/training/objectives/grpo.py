"""Reinforcement fine-tuning (OpenAI's `method: reinforcement`) trained with GRPO: at each step the
current policy answers every prompt of the step `group_size` times, the job's grader scores the
answers, and the loss moves the policy towards the answers that beat their group (grpo_step.py).

Reported per step (train_*): the loss, the reward's mean and spread (and each sub-grader's mean for
a multi grader), the KL to the starting model (with training.grpo.beta), the share of clipped
tokens, the answers' mean length and how many ran out of tokens, grading errors. Every
`eval_interval` steps (valid_*): the mean reward of greedy answers to `eval_samples` validation
rows. Each answer is drawn from a seed of the job's seed, the step, its row and its place in the
group (grpo_rollouts.answer_seed): a resumed run, or one with another number of processes, samples
the answers an uninterrupted one-process run samples. A model grader's judge is loaded beside the
policy (workers/models/local_judge.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import AutoModelForCausalLM

from lmtune.graders import Tools, grade_batch, sample_namespace
from lmtune.graders.sandbox import sandbox_limits
from lmtune.graders.schema import judged_by
from lmtune.reinforcement import GrpoOptions, check_prompt_file, resolve
from lmtune.settings import load_settings
from lmtune.training_data import DatasetError
from workers.models.lazy_embedder import LazyEmbedder
from workers.models.local_judge import LocalJudge
from workers.training.errors import InvalidDataError
from workers.training.objectives.base import MicroBatch, Objective, RunContext, Sums
from workers.training.objectives.grpo_loss import units
from workers.training.objectives.grpo_step import GrpoStep, check_prompt_lengths


@dataclass
class PromptRows:
    """A reinforcement file's rows, as the loop indexes them."""

    rows: list[dict]
    truncated: int = 0
    dropped: int = 0

    def __len__(self) -> int:
        return len(self.rows)


# the sums each micro-batch reports; `summarize` turns them into the reported values
SUMS = (
    "reward",
    "reward_squared",
    "answers",
    "answer_tokens",
    "kl",
    "clipped",
    "truncated",
    "grading_errors",
    "generation_seconds",
    "grading_seconds",
)


class Grpo(Objective):
    method = "reinforcement"

    def __init__(self, spec, tokenizer):
        super().__init__(spec, tokenizer)
        self.reinforcement = spec.method.reinforcement
        self.grader = self.reinforcement.grader
        self.options = spec.training.grpo or GrpoOptions()
        self.resolved = resolve(self.reinforcement.hyperparameters, self.options)
        self.sub_graders = tuple(getattr(self.grader, "graders", {}))
        self.metric_names = (*SUMS, *(f"reward_{name}" for name in self.sub_graders))
        self.eval_every_steps = self.resolved.eval_interval
        self.eval_sample_size = self.resolved.eval_samples
        self.evaluates_whole_file = False  # eval_samples bounds the generation an evaluation costs
        self.step: GrpoStep | None = None

    def load_data(self, field: str, path: str, min_examples: int) -> PromptRows:
        try:
            rows = [row.data for row in check_prompt_file(path, self.grader, min_examples)]
        except DatasetError as error:
            raise InvalidDataError(f"{field} is not a valid reinforcement file:\n{error}", param=field) from None
        max_seq_length = self.spec.training.max_seq_length
        check_prompt_lengths(self.tokenizer, rows, field, max_seq_length, self.resolved.max_completion_tokens)
        return PromptRows(rows)

    def before_training(self, run: RunContext) -> None:
        self.run = run
        accelerator = run.accelerator
        reference = None
        if self.options.beta:  # the starting model, frozen, for the KL term
            reference = AutoModelForCausalLM.from_pretrained(self.spec.model, dtype=_dtype_of(run.model))
            reference.to(accelerator.device).eval().requires_grad_(False)
        judge = LocalJudge(accelerator.device)  # model graders' judges, loaded now: one that cannot fails the job
        for field, source in judged_by(self.grader).items():
            judge.load(source, f"method.reinforcement.grader.{field}")
        tools = Tools(judge=judge, embedder=LazyEmbedder(), sandbox=sandbox_limits(load_settings()))
        self.step = GrpoStep(
            self.options,
            self.resolved,
            self.grader,
            tools,
            self.tokenizer,
            accelerator.device,
            self.spec.seed,
            reference,
            reduce=lambda sums: accelerator.reduce(sums, "sum"),
        )

    # ---- the step ----

    def step_batches(self, run: RunContext, step: int, ids: list[list[int]]) -> list[MicroBatch]:
        rows = run.train_data.rows
        data = self.step.rollout(
            run.accelerator.unwrap_model(run.model), step, [[(i, rows[i]) for i in part] for part in ids]
        )
        batches, start = [], 0
        group = self.resolved.group_size
        for part, micro in zip(ids, data.micro_batches):
            answers = range(start * group, (start + len(part)) * group)
            start += len(part)
            sums = _answer_sums(data.rollouts, answers, self.sub_graders)
            if not batches:  # the step's time, once
                sums |= {"generation_seconds": data.rollouts.generation_seconds}
                sums |= {"grading_seconds": data.rollouts.grading_seconds}
            batches.append(
                MicroBatch(
                    inputs={"grpo": micro, "sums": sums},
                    units=units(self.options.loss_type, micro.answer_mask) if part else 0,
                    tokens=micro.tokens if part else 0,
                    target_tokens=int(micro.answer_mask.sum()),
                )
            )
        return batches

    def micro_batch(self, data: PromptRows, ids: list[int]) -> MicroBatch:
        raise NotImplementedError("reinforcement batches are made with the model: see step_batches")

    def loss(self, model: torch.nn.Module, batch: MicroBatch) -> Sums:
        out = self.step.loss(model, batch.inputs["grpo"])
        device = out.loss.device
        metrics = {name: torch.tensor(value, device=device) for name, value in batch.inputs["sums"].items()}
        metrics |= {"kl": out.kl, "clipped": out.clipped}
        return Sums(out.loss, metrics)

    def summarize(self, units: float, sums: dict[str, float]) -> dict[str, float]:
        answers, tokens = max(sums["answers"], 1.0), max(sums["answer_tokens"], 1.0)
        mean = sums["reward"] / answers
        spread = (sums["reward_squared"] - answers * mean**2) / (answers - 1) if answers > 1 else 0.0
        values = {
            "loss": sums["loss"] / max(units, 1.0),
            "reward_mean": mean,
            "reward_std": math.sqrt(max(spread, 0.0)),
            **{f"reward_{name}_mean": sums[f"reward_{name}"] / answers for name in self.sub_graders},
            "completion_length": sums["answer_tokens"] / answers,
            "truncated_ratio": sums["truncated"] / answers,
            "clip_ratio": sums["clipped"] / tokens,
            "grading_errors": sums["grading_errors"],
            # each process's time, averaged over processes: they answer and grade side by side
            "generation_seconds": sums["generation_seconds"] / self.run.accelerator.num_processes,
            "grading_seconds": sums["grading_seconds"] / self.run.accelerator.num_processes,
        }
        if self.options.beta:
            values["kl"] = sums["kl"] / tokens
        return values

    # ---- evaluation: greedy answers to validation rows, graded ----

    @torch.no_grad()
    def evaluate(self, run: RunContext, ids: list[int], batch_size: int) -> dict[str, float]:
        accelerator = run.accelerator
        mine = ids[accelerator.process_index :: accelerator.num_processes]
        model = accelerator.unwrap_model(run.model)
        totals = torch.zeros(2 + len(self.sub_graders), device=accelerator.device)
        for start in range(0, len(mine), max(batch_size, 1) * self.resolved.group_size):
            rows = [run.valid_data.rows[i] for i in mine[start : start + batch_size * self.resolved.group_size]]
            rollouts = self.step.evaluate(model, rows)
            sums = _answer_sums(rollouts, range(len(rows)), self.sub_graders)
            totals += torch.tensor(
                [sums["reward"], sums["answers"], *(sums[f"reward_{n}"] for n in self.sub_graders)],
                device=accelerator.device,
            )
        reward, answers, *subs = accelerator.reduce(totals, "sum").tolist()
        answers = max(answers, 1.0)
        return {
            "reward_mean": reward / answers,
            **{f"reward_{name}_mean": value / answers for name, value in zip(self.sub_graders, subs)},
        }

    def grade_samples(self, items: list[dict], answers: list[str]) -> list[dict]:
        """Each sample answer's `reward` and `grades`: every sub-grader's score for a multi grader,
        else the grader's own, by name."""
        grades = grade_batch(
            self.grader, [(sample_namespace(text), item) for text, item in zip(answers, items)], self.step.tools
        )
        return [
            {"reward": grade.score, "grades": grade.sub_scores if self.sub_graders else {self.grader.name: grade.score}}
            for grade in grades
        ]


def _answer_sums(rollouts, answers: range, sub_graders: Sequence[str]) -> dict[str, float]:
    grades = [rollouts.grades[i] for i in answers]
    return {
        "reward": sum(g.score for g in grades),
        "reward_squared": sum(g.score**2 for g in grades),
        "answers": float(len(grades)),
        "answer_tokens": float(sum(len(rollouts.answer_ids[i]) for i in answers)),
        "truncated": float(sum(rollouts.truncated[i] for i in answers)),
        "grading_errors": float(sum(g.failed for g in grades)),
        "generation_seconds": 0.0,
        "grading_seconds": 0.0,
        **{f"reward_{name}": sum(g.sub_scores.get(name, 0.0) for g in grades) for name in sub_graders},
    }


def _dtype_of(model) -> torch.dtype:
    return next(model.parameters()).dtype
