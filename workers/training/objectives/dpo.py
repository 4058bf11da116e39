"""Direct Preference Optimization (method "dpo") on OpenAI's preference rows: the sigmoid loss of
workers/training/dpo_loss.py with the job's beta, a pair being the unit of a step's mean.

The reference is the starting model. Its log-probabilities of every training and validation pair
are computed once, before the first step (with LoRA, by the model with its adapter switched off: no
second copy of the weights), and kept in the run folder (`reference_logps.pt`, lmtune/layout.py), so that a resumed
run, whose model has moved, uses the same reference and gives the same per-step losses. Each pair's
two values then travel with its examples (columns `ref_chosen`, `ref_rejected`).

Reported beside the loss: `rewards_chosen` and `rewards_rejected` (the mean of beta x (log-prob -
reference log-prob) of each side), `rewards_margin` (their difference) and `preference_accuracy`
(the share of pairs whose chosen reward is the higher), as TRL's rewards/* metrics.
"""

from __future__ import annotations

import contextlib
import logging
import math

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType

from lmtune.layout import latest_checkpoint
from lmtune.training_data import SHAPE_NAMES, DatasetError, validate_jsonl_file
from workers.training.data import TokenizedData
from workers.training.dpo_loss import SequenceLogProbs, dpo_sums
from workers.training.errors import InvalidDataError, OutputConflictError
from workers.training.objectives.base import MicroBatch, Objective, RunContext, Sums
from workers.training.preference_data import collate_pairs, collate_pairs_packed, tokenize_pairs

log = logging.getLogger(__name__)
REFERENCE_PAIRS = 8  # pairs per forward pass of the reference computation (no gradients kept)
REFERENCE_COLUMNS = ("ref_chosen", "ref_rejected")


class Dpo(Objective):
    method = "dpo"
    metric_names = ("rewards_chosen", "rewards_rejected", "rewards_margin", "preference_accuracy")

    def __init__(self, spec, tokenizer):
        super().__init__(spec, tokenizer)
        self.beta = spec.method.beta
        self.max_seq_length, self.packing = spec.training.max_seq_length, spec.training.packing
        self._logps: SequenceLogProbs | None = None

    def load_data(self, field: str, path: str, min_examples: int) -> TokenizedData:
        try:
            rows = validate_jsonl_file(path, min_examples)
        except DatasetError as error:
            raise InvalidDataError(f"{field} is not a valid fine-tuning file:\n{error}", param=field) from None
        other = next((row for row in rows if row.shape != "preference"), None)
        if other is not None:  # a file of one method's rows: the first row says which
            raise InvalidDataError(
                f"{field}: line {other.line} is {SHAPE_NAMES[other.shape]} row; method 'dpo' trains on preference "
                "rows; use method 'supervised' for this file",
                param=field,
            )
        data = tokenize_pairs(rows, self.tokenizer, self.max_seq_length)
        if len(data) == 0:
            raise InvalidDataError(
                f"{field}: no pair has a completion token within max_seq_length={self.max_seq_length}", param=field
            )
        return data

    def attach(self, model: torch.nn.Module, accelerator: Accelerator) -> None:
        chunked = accelerator.distributed_type != DistributedType.FSDP  # as the supervised loss
        self._logps = SequenceLogProbs(model, accelerator.device, chunked=chunked)

    def before_training(self, run: RunContext) -> None:
        path = run.layout.reference_logps
        datasets = {"train": run.train_data, "valid": run.valid_data}
        wanted = {name: len(data) for name, data in datasets.items() if data is not None}
        stored = torch.load(path, weights_only=True) if path.exists() else None
        if stored is None or {name: len(values) for name, values in stored.items()} != wanted:
            if latest_checkpoint(run.layout.checkpoints) and not _has_adapter(run):
                raise OutputConflictError(
                    f"the run folder has checkpoints but not the reference log-probabilities ({path.name}) they "
                    "were trained against, and the starting model cannot be had back from them"
                )
            stored = {name: self._reference_logps(run, datasets[name]) for name in wanted}
            if run.accelerator.is_main_process:
                run.fence.write(path, lambda handle: torch.save(stored, handle))
        for name, values in stored.items():
            data = datasets[name]
            examples = data.examples.remove_columns([c for c in REFERENCE_COLUMNS if c in data.examples.column_names])
            for column, side in zip(REFERENCE_COLUMNS, values.T.tolist(), strict=True):
                examples = examples.add_column(column, side)
            data.examples = examples

    def micro_batch(self, data: TokenizedData, ids: list[int]) -> MicroBatch:
        if not ids:
            # a pair with no completion keeps this process in the gradient reduction, adding nothing
            empty = {**data.examples[0], "chosen_ids": [], "rejected_ids": []}
            inputs = {**self._collate([empty]), "pairs": 0}
            return MicroBatch(inputs, units=0, tokens=0, target_tokens=0)
        pairs = list(data.examples.select(ids))
        inputs = {**self._collate(pairs), "pairs": len(pairs)}
        if REFERENCE_COLUMNS[0] in pairs[0]:
            inputs["reference"] = torch.tensor([[p[c] for c in REFERENCE_COLUMNS] for p in pairs])
        completions = sum(len(p["chosen_ids"]) + len(p["rejected_ids"]) for p in pairs)
        tokens = completions + 2 * sum(len(p["prompt_ids"]) for p in pairs)
        return MicroBatch(inputs, units=len(pairs), tokens=tokens, target_tokens=completions)

    def loss(self, model: torch.nn.Module, batch: MicroBatch) -> Sums:
        logps = self._logps(model, batch.inputs)
        n = batch.inputs["pairs"]
        reference = batch.inputs.get("reference", logps.new_zeros(n, 2)).to(logps.device)
        sums = dpo_sums(logps[:n], logps[n : 2 * n], reference[:, 0], reference[:, 1], self.beta)
        return Sums(
            sums.loss,
            {
                "rewards_chosen": sums.chosen_rewards,
                "rewards_rejected": sums.rejected_rewards,
                "rewards_margin": sums.chosen_rewards - sums.rejected_rewards,
                "preference_accuracy": sums.correct,
            },
        )

    def _collate(self, pairs: list[dict]) -> dict:
        if self.packing:
            return collate_pairs_packed(pairs, self.tokenizer.pad_token_id, self.max_seq_length)
        return collate_pairs(pairs, self.tokenizer.pad_token_id)

    @torch.no_grad()
    def _reference_logps(self, run: RunContext, data: TokenizedData) -> torch.Tensor:
        """[pairs, 2] summed log-probabilities of each side under the starting model. Each process
        takes every world-th pair and the same number of forward passes (FSDP gathers weights in each)."""
        accelerator, model = run.accelerator, run.model
        values = torch.zeros(len(data), 2, device=accelerator.device)
        mine = list(range(accelerator.process_index, len(data), accelerator.num_processes))
        passes = math.ceil(math.ceil(len(data) / accelerator.num_processes) / REFERENCE_PAIRS)
        was_training = model.training
        model.eval()  # no dropout: the reference is the model itself
        try:
            with _adapter_off(accelerator.unwrap_model(model)):
                for number in range(passes):
                    ids = mine[number * REFERENCE_PAIRS : (number + 1) * REFERENCE_PAIRS]
                    batch = self.micro_batch(data, ids)
                    logps = self._logps(model, batch.inputs)
                    if ids:
                        values[ids] = torch.stack([logps[: len(ids)], logps[len(ids) : 2 * len(ids)]], 1).float()
                    if accelerator.is_main_process and (number + 1) % 50 == 0:
                        log.info("reference log-probabilities: %d of %d passes", number + 1, passes)
        finally:
            model.train(was_training)
        return accelerator.reduce(values, "sum").cpu()


def _has_adapter(run: RunContext) -> bool:
    return hasattr(run.accelerator.unwrap_model(run.model), "disable_adapter")


def _adapter_off(model) -> contextlib.AbstractContextManager:
    """The starting model: a PEFT model with its adapter switched off, any other model as it is."""
    return model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()
