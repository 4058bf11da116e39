"""Supervised fine-tuning: next-token cross-entropy on the target tokens of chat, prompt/completion
and text rows (OpenAI's training-file shapes), reporting the mean token accuracy beside the loss."""

from __future__ import annotations

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType

from lmtune.training_data import DatasetError, validate_jsonl_file
from workers.training.data import IGNORE_INDEX, TokenizedData, collate_packed, collate_padded, tokenize_rows
from workers.training.errors import InvalidDataError
from workers.training.loss import CausalLMLoss
from workers.training.objectives.base import MicroBatch, Objective, Sums


class Supervised(Objective):
    method = "supervised"
    metric_names = ("mean_token_accuracy",)

    def __init__(self, spec, tokenizer):
        super().__init__(spec, tokenizer)
        training = spec.training
        self.max_seq_length, self.packing = training.max_seq_length, training.packing
        self._loss: CausalLMLoss | None = None

    def load_data(self, field: str, path: str, min_examples: int) -> TokenizedData:
        """The file of the job's `field`; errors name the field, never the server path."""
        try:
            rows = validate_jsonl_file(path, min_examples)
        except DatasetError as error:
            raise InvalidDataError(f"{field} is not a valid fine-tuning file:\n{error}", param=field) from None
        data = tokenize_rows(rows, self.tokenizer, self.max_seq_length)
        if len(data) == 0:
            raise InvalidDataError(
                f"{field}: no example has a target token within max_seq_length={self.max_seq_length}", param=field
            )
        return data

    def attach(self, model: torch.nn.Module, accelerator: Accelerator) -> None:
        # chunked loss through the model's own forward; not under FSDP (see CausalLMLoss)
        chunked = accelerator.distributed_type != DistributedType.FSDP
        self._loss = CausalLMLoss(model, accelerator.device, chunked=chunked)

    def micro_batch(self, data: TokenizedData, ids: list[int]) -> MicroBatch:
        if not ids:
            # one example with no targets keeps this process in the gradient reduction, adding nothing
            example = data.examples[0]
            empty = {"input_ids": example["input_ids"], "labels": [IGNORE_INDEX] * len(example["labels"])}
            return MicroBatch(self._collate([empty]), units=0, tokens=0, target_tokens=0)
        examples = list(data.examples.select(ids))
        inputs = self._collate(examples)
        targets = int((inputs["labels"][:, 1:] != IGNORE_INDEX).sum())
        tokens = sum(len(example["input_ids"]) for example in examples)
        return MicroBatch(inputs, units=targets, tokens=tokens, target_tokens=targets)

    def loss(self, model: torch.nn.Module, batch: MicroBatch) -> Sums:
        sums = self._loss(model, batch.inputs)
        return Sums(sums.loss, {"mean_token_accuracy": sums.correct})

    def _collate(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        pad_id = self.tokenizer.pad_token_id
        if self.packing:
            return collate_packed(examples, pad_id, self.max_seq_length)
        return collate_padded(examples, pad_id)
