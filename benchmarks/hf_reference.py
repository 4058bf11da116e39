"""The same work run through `transformers.Trainer`: the reference for parity tests and benchmarks
(not part of the lmtune package: it serves tests and benchmarks only).

It trains on lmtune's own tokenised examples and collator, in order (no shuffling), with the
spec's optimizer settings and packing, and records Trainer's logged loss at every step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import SequentialSampler
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainerCallback, TrainingArguments

from lmtune.spec import JobSpec, resolve_hyperparameters
from lmtune.training_data import validate_jsonl_file
from workers.training.data import collate_packed, collate_padded, tokenize_rows
from workers.training.step_plan import StepPlan


@dataclass
class ReferenceRun:
    losses: list[float]
    train_seconds: float
    non_padding_tokens: int


class _InOrder(Trainer):
    def _get_train_sampler(self, *args, **kwargs):
        return SequentialSampler(self.train_dataset)


class _LossRecorder(TrainerCallback):
    def __init__(self):
        self.losses: list[float] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(logs["loss"])


def run_hf_trainer(spec: JobSpec, output_dir: str | Path) -> ReferenceRun:
    tokenizer = AutoTokenizer.from_pretrained(spec.model)
    data = tokenize_rows(validate_jsonl_file(spec.training_file), tokenizer, spec.training.max_seq_length).examples
    hp = resolve_hyperparameters(spec, len(data))
    settings = spec.training
    recorder = _LossRecorder()
    args = TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=hp.micro_batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        num_train_epochs=hp.n_epochs,
        max_steps=settings.max_steps or -1,
        learning_rate=hp.learning_rate,
        lr_scheduler_type=settings.lr_scheduler,
        warmup_steps=math.ceil(settings.warmup_ratio * hp.total_steps),
        weight_decay=settings.weight_decay,
        max_grad_norm=settings.max_grad_norm or 0.0,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=not torch.cuda.is_available(),
        seed=spec.seed,
        remove_unused_columns=False,
        disable_tqdm=True,
        gradient_checkpointing=settings.gradient_checkpointing == "full",  # Trainer has no selective mode
    )
    if settings.packing:
        collate = lambda examples: collate_packed(examples, tokenizer.pad_token_id, settings.max_seq_length)  # noqa: E731
    else:
        collate = lambda examples: collate_padded(examples, tokenizer.pad_token_id)  # noqa: E731
    trainer = _InOrder(
        model=AutoModelForCausalLM.from_pretrained(spec.model, dtype=torch.float32),
        args=args,
        train_dataset=data,
        data_collator=collate,
        callbacks=[recorder],
    )
    output = trainer.train()
    plan = StepPlan(len(data), hp.batch_size, settings.gradient_accumulation_steps, 1, spec.seed, shuffle=False)
    lengths = [len(ids) for ids in data["input_ids"]]
    tokens = sum(lengths[i] for step in range(hp.total_steps) for ids in plan.micro_batches(step, 0) for i in ids)
    return ReferenceRun(recorder.losses, output.metrics["train_runtime"], tokens)
