"""The same DPO run through TRL's `DPOTrainer`: the reference for the parity tests and the benchmark
(not part of the lmtune package).

It trains on the spec's preference file (OpenAI's rows as TRL's conversational prompt/chosen/rejected,
which TRL tokenises as lmtune does), in order (no shuffling), with the spec's beta, optimizer,
schedule, precision and LoRA settings, and records each step's loss unrounded (Trainer's log rounds
to four decimals) and the peak memory of the process.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import SequentialSampler
from transformers import AutoModelForCausalLM, AutoTokenizer

from lmtune.spec import JobSpec, resolve_hyperparameters
from workers.training.model_setup import lora_config


@dataclass
class TrlRun:
    losses: list[float]  # per optimizer step, the mean over its pairs
    train_seconds: float
    pairs: int


def run_trl_dpo(spec: JobSpec, output_dir: str | Path, *, bf16: bool = False) -> TrlRun:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    class InOrder(DPOTrainer):
        """Batches in file order, and each micro-batch's loss kept as computed."""

        micro_losses: list[float] = []

        def _get_train_sampler(self, *args, **kwargs):
            return SequentialSampler(self.train_dataset)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if model.training:
                self.micro_losses.append((loss[0] if return_outputs else loss).item())
            return loss

    rows = [json.loads(line) for line in Path(spec.training_file).read_text().splitlines() if line.strip()]
    data = Dataset.from_list(
        [
            {
                "prompt": row["input"]["messages"],
                "chosen": row["preferred_output"],
                "rejected": row["non_preferred_output"],
            }
            for row in rows
        ]
    )
    hp = resolve_hyperparameters(spec, len(rows))
    settings = spec.training
    args = DPOConfig(
        output_dir=str(output_dir),
        beta=hp.beta,
        max_length=settings.max_seq_length,
        per_device_train_batch_size=hp.micro_batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        num_train_epochs=hp.n_epochs,
        max_steps=settings.max_steps or -1,
        learning_rate=hp.learning_rate,
        lr_scheduler_type=settings.lr_scheduler,
        warmup_steps=math.ceil(settings.warmup_ratio * hp.total_steps),
        weight_decay=settings.weight_decay,
        max_grad_norm=settings.max_grad_norm or 0.0,
        gradient_checkpointing=settings.gradient_checkpointing != "off",
        bf16=bf16,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=not torch.cuda.is_available(),
        seed=spec.seed,
        disable_tqdm=True,
    )
    trainer = InOrder(
        model=AutoModelForCausalLM.from_pretrained(spec.model, dtype=torch.float32),
        args=args,
        train_dataset=data,
        processing_class=AutoTokenizer.from_pretrained(spec.model),
        peft_config=lora_config(settings.lora) if settings.lora else None,
    )
    InOrder.micro_losses = []
    output = trainer.train()
    per_step = settings.gradient_accumulation_steps
    losses = [
        sum(InOrder.micro_losses[i : i + per_step]) / per_step for i in range(0, len(InOrder.micro_losses), per_step)
    ]
    return TrlRun(losses, output.metrics["train_runtime"], len(rows))
