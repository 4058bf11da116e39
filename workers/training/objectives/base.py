"""What a training method owns, apart from the loop that every method shares.

The loop (`workers/training/loop.py`) owns the step plan, micro-batches and accumulation, processes,
clipping, the optimizer and schedule, the evaluation cadence, checkpoints, resume, fencing, early
stopping and the observers. An `Objective` owns the rest: the row shape it accepts and how rows are
tokenised and collated, the loss and the metrics it reports beside `loss`, what evaluation means
for it, and any state of its own. As TRL's trainers override `compute_loss` and bring a collator,
and torchtune's recipes swap the loss module, while the step is the same.

A micro-batch's loss is a sum over its `units` (target tokens, preference pairs, answers): the loop
divides by the units of the whole global step (every micro-batch of every process), so the
gradient is the mean over the step however it is cut into micro-batches and processes. Metrics are
sums too; the loop adds them over micro-batches and processes and `summarize` turns the totals into
the reported values. Each name reported (`loss` and `metric_names`) becomes a column
`train_<name>` of metrics.jsonl and, where measured, `valid_<name>` and `full_valid_<name>`; the
trackers, the job's events and its results file take them from there.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol

import torch
from accelerate import Accelerator

from lmtune.fence import RunFence
from lmtune.layout import RunLayout
from lmtune.spec import JobSpec


class Examples(Protocol):
    """A loaded data file: the loop indexes it by position (the step plan, the validation sample)."""

    truncated: int  # examples cut to max_seq_length (run.json)
    dropped: int  # examples skipped because nothing was left to learn from after the cut (run.json)

    def __len__(self) -> int: ...


@dataclass
class MicroBatch:
    inputs: dict  # what `loss` takes (tensors still on the CPU)
    units: int  # what its loss sums over; known before the forward, for the step's scale
    tokens: int  # every non-padding token processed
    target_tokens: int  # those of them that carry loss


@dataclass
class Sums:
    """One micro-batch's contribution: `loss` carries the gradient, `metrics` are summed like it."""

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class RunContext:
    """What an objective may use once the model is ready (after `accelerator.prepare` and resume)."""

    spec: JobSpec
    layout: RunLayout
    accelerator: Accelerator
    model: torch.nn.Module  # as prepared (DDP, FSDP); `accelerator.unwrap_model` for PEFT's adapters
    tokenizer: object
    fence: RunFence  # check before writing to the run folder
    train_data: Examples
    valid_data: Examples | None


class Objective(ABC):
    """One training method. `method`: its key in the registry (objectives/__init__.py).
    `metric_names`: what `summarize` reports beside `loss`, in column order."""

    method: ClassVar[str]
    metric_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, spec: JobSpec, tokenizer):
        self.spec, self.tokenizer = spec, tokenizer
        # when the loop evaluates: every `eval_every_steps` on a fixed sample of `eval_sample_size`
        # validation examples (valid_*), and the whole file at each epoch's end (full_valid_*) when
        # `evaluates_whole_file`
        self.eval_every_steps = spec.training.eval_every_steps
        self.eval_sample_size = spec.training.eval_sample_size
        self.evaluates_whole_file = True

    @abstractmethod
    def load_data(self, field: str, path: str, min_examples: int) -> Examples:
        """The job's file `field` validated and tokenised; InvalidDataError naming `field` if unusable."""

    def attach(self, model: torch.nn.Module, accelerator: Accelerator) -> None:
        """The bare model, before `accelerator.prepare` wraps it: where forward hooks go."""
        return  # nothing by default

    def before_training(self, run: RunContext) -> None:
        """Per-run state before the first step of this session (every process; after a resume too),
        such as reference log-probabilities computed once and stored in the run folder. An
        objective that needs the run later (`loss` gets the model alone) keeps `run` here."""
        return  # nothing by default

    @abstractmethod
    def micro_batch(self, data: Examples, ids: list[int]) -> MicroBatch:
        """The collated examples `ids`. `ids` can be empty (a short last batch): then a batch of 0
        units that still runs the model's forward, so this process takes part in the gradient sync."""

    def step_batches(self, run: RunContext, step: int, ids: list[list[int]]) -> list[MicroBatch]:
        """This process's micro-batches of 0-based `step`, one per accumulation slice `ids` of the
        step plan. Methods that make their batches with the model (generating answers) override this;
        the model is in train mode."""
        return [self.micro_batch(run.train_data, slice_ids) for slice_ids in ids]

    @abstractmethod
    def loss(self, model: torch.nn.Module, batch: MicroBatch) -> Sums:
        """The summed loss and metric sums of one micro-batch, through `model` (the prepared one,
        so that DDP syncs); the loop scales and backpropagates the loss."""

    def summarize(self, units: float, sums: dict[str, float]) -> dict[str, float]:
        """The reported values, `loss` first, from totals over micro-batches and processes
        (`sums` has `loss` and each metric); by default each is a mean over the units."""
        return {name: sums[name] / units for name in ("loss", *self.metric_names)}

    @torch.no_grad()
    def evaluate(self, run: RunContext, ids: list[int], batch_size: int) -> dict[str, float]:
        """The reported values over validation examples `ids`, each process taking every world-th;
        every process gets the same answer. By default the training loss and metrics, without
        gradients."""
        accelerator = run.accelerator
        mine = ids[accelerator.process_index :: accelerator.num_processes]
        totals = torch.zeros(2 + len(self.metric_names), device=accelerator.device)
        for start in range(0, len(mine), batch_size):
            batch = self.micro_batch(run.valid_data, mine[start : start + batch_size])
            totals += self.stack(self.loss(run.model, batch), batch.units)
        return self.unstack(accelerator.reduce(totals, "sum").tolist())

    def stack(self, sums: Sums, units: float) -> torch.Tensor:
        """One micro-batch's loss, metrics and units as one tensor, for one reduction over processes."""
        values = [sums.loss.detach(), *(sums.metrics[name] for name in self.metric_names)]
        return torch.stack([value.float() for value in values] + [values[0].new_tensor(float(units))])

    def unstack(self, totals: list[float]) -> dict[str, float]:
        *values, units = totals
        return self.summarize(units, dict(zip(("loss", *self.metric_names), values, strict=True)))

    def grade_samples(self, items: list[dict], answers: list[str]) -> list[dict]:
        """Fields added to each sample answer at a checkpoint (samples.jsonl), given the rows the
        prompts came from: a method that grades answers adds their grades. Main process only."""
        return [{} for _ in answers]

    def state_dict(self) -> dict:
        """State of its own that a resumed run needs: tensors, numbers, strings, lists and dicts
        (read back with `weights_only`). The main process's is saved; the torch, CUDA, numpy and
        Python RNG states of every process are kept by the loop already. Empty: nothing is saved."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """What `state_dict` gave, on every process, when the run resumes from a checkpoint."""
        return  # nothing by default


def objective_state_file(checkpoint: Path) -> Path:
    return checkpoint / "objective_state.pt"
