"""The training function: one job spec in, a trained model and its records out.

Reads top to bottom: setup, data, model, optimizer, resume, then the loop (micro-batches,
clip, step, log, evaluate, checkpoint), then the final export. It runs the same under the CLI,
a Celery worker, a test, or `torchrun` with several processes.
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from transformers import get_scheduler
from transformers.utils import logging as transformers_logging

from lmtune.layout import RunLayout
from lmtune.spec import JobSpec, ResolvedHyperparameters, resolve_hyperparameters
from lmtune.training_data import MIN_EXAMPLES, DatasetError, validate_jsonl_file
from lmtune.layout import checkpoint_name, latest_checkpoint
from workers.training import checkpoints as ckpt
from workers.training.data import IGNORE_INDEX, TokenizedData, collate_packed, collate_padded, tokenize_rows
from workers.training.errors import DivergedError, InvalidDataError, OutputConflictError, TrainingPaused
from lmtune.metrics_log import MetricsLog
from workers.training.metrics import plot_loss
from workers.training.model_loading import check_context_length, load_model, load_tokenizer, save_final, save_model
from workers.training.observer import Observer
from workers.training.sampling import Sampler
from workers.training.step_plan import StepPlan
from workers.training.validation_watch import ValidationWatch


@dataclass
class TrainingResult:
    output_dir: Path
    steps: int
    trained_tokens: int
    final_dir: Path
    last_metrics: dict

    @classmethod
    def read(cls, layout: RunLayout) -> "TrainingResult":
        data = json.loads(layout.result.read_text())
        return cls(layout.root, data["steps"], data["trained_tokens"], layout.final, data["last_metrics"])


def train(spec: JobSpec, output_dir: str | Path, observer: Observer | None = None, model_name: str | None = None) -> TrainingResult:
    """`model_name`: what the user calls `spec.model` (a catalogue name), used in messages and saved
    files instead of the local folder the weights come from."""
    observer = observer or Observer()
    model_name = model_name or spec.model
    transformers_logging.disable_progress_bar()  # lmtune's own bar is the one to show
    layout = RunLayout(Path(output_dir))
    if layout.result.exists():  # a repeated delivery of a finished run: nothing to redo
        return TrainingResult.read(layout)

    settings = spec.training
    # train() may run many times in one process (tests, notebooks); each run sets its own precision.
    # The process group (PartialState) is kept.
    AcceleratorState._reset_state()
    accelerator = Accelerator(
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        mixed_precision=_precision(settings.mixed_precision),
    )
    world, rank = accelerator.num_processes, accelerator.process_index

    # data: validated whole before any compute
    tokenizer = load_tokenizer(spec.model, model_name)
    check_context_length(spec.model, model_name, settings.max_seq_length)
    train_data = _load_data("training_file", spec.training_file, tokenizer, settings.max_seq_length, MIN_EXAMPLES)
    valid_data = (
        _load_data("validation_file", spec.validation_file, tokenizer, settings.max_seq_length, min_examples=1)
        if spec.validation_file
        else None
    )
    hp = resolve_hyperparameters(spec, len(train_data), world)
    plan = StepPlan(len(train_data), hp.batch_size, settings.gradient_accumulation_steps, world, spec.seed, settings.shuffle)
    if accelerator.is_main_process:
        _prepare_output(layout, spec, hp, train_data, valid_data, world)
    accelerator.wait_for_everyone()

    # model, optimizer, schedule; resumed from the newest complete checkpoint if there is one
    set_seed(spec.seed)
    resume = latest_checkpoint(layout.checkpoints)
    model = load_model(spec.model, settings, resume[1] if resume else None, name=model_name)
    # fused: one kernel for all parameters, as transformers.Trainer uses by default
    optimizer = torch.optim.AdamW(_parameter_groups(model, settings.weight_decay), lr=hp.learning_rate, fused=True)
    scheduler = get_scheduler(
        settings.lr_scheduler,
        optimizer,
        num_warmup_steps=math.ceil(settings.warmup_ratio * hp.total_steps),
        num_training_steps=hp.total_steps,
    )
    # the scheduler is not prepared: Accelerate would step it once per process
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    # weights live once, in Hugging Face format beside training_state/; save_state keeps the rest
    accelerator.register_save_state_pre_hook(lambda models, weights, folder: weights.clear())
    accelerator.register_load_state_pre_hook(lambda models, folder: models.clear())

    metrics = MetricsLog(layout.metrics)
    progress = {"step": 0, "tokens": 0, "elapsed_seconds": 0.0}
    if resume:
        accelerator.load_state(str(resume[1] / ckpt.TRAINING_STATE_DIR))
        progress.update(ckpt.read_trainer_state(resume[1]))
        if accelerator.is_main_process:
            metrics.truncate_after(progress["step"])
    history = metrics.read() if accelerator.is_main_process else []
    eval_sample = _fixed_sample(valid_data, settings.eval_sample_size, spec.seed) if valid_data else None
    sampler = Sampler(spec, tokenizer, layout, accelerator, progress["step"])
    watch = ValidationWatch(settings, [row for row in metrics.read() if row["step"] <= progress["step"]])

    collate = _collator(settings.packing, tokenizer.pad_token_id, settings.max_seq_length)
    stop = _SigtermStop()
    observer.on_start(total_steps=hp.total_steps, start_step=progress["step"])
    session_start, elapsed_before = time.monotonic(), progress["elapsed_seconds"]
    last_row: dict = history[-1] if history else {}

    with stop:
        for step in range(progress["step"], hp.total_steps):
            model.train()
            batches = [collate(_examples(train_data, ids)) for ids in plan.micro_batches(step, rank)]
            step_targets = accelerator.reduce(
                torch.tensor(sum(_targets(b) for b in batches), device=accelerator.device), "sum"
            ).item()
            totals = torch.zeros(4, device=accelerator.device)  # loss sum, correct, targets, stop flag
            for batch in batches:
                with accelerator.accumulate(model):
                    loss_sum, correct, targets = _forward(model, batch, accelerator.device)
                    # mean over every target token of the global step; undo DDP's mean over processes
                    # and Accelerate's division by the accumulation steps
                    scale = world * settings.gradient_accumulation_steps / step_targets
                    accelerator.backward(loss_sum * scale)
                    totals[:3] += torch.stack([loss_sum.detach(), correct, targets])
            grad_norm = accelerator.clip_grad_norm_(model.parameters(), settings.max_grad_norm or math.inf)
            totals[3] = float(stop.requested)
            totals = accelerator.reduce(totals, "sum")
            loss = (totals[0] / totals[2]).item()
            learning_rate = scheduler.get_last_lr()[0]
            _check_finite(step + 1, loss, float(grad_norm), learning_rate)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)

            progress["step"] = step + 1
            progress["tokens"] += int(totals[2].item())
            progress["elapsed_seconds"] = elapsed_before + time.monotonic() - session_start
            row = {
                "step": step + 1,
                "total_steps": hp.total_steps,
                "epoch": round((step + 1) / plan.steps_per_epoch, 4),
                "train_loss": loss,
                "train_mean_token_accuracy": (totals[1] / totals[2]).item(),
                "learning_rate": learning_rate,
                "grad_norm": float(grad_norm),
                "tokens": progress["tokens"],
                "tokens_per_second": progress["tokens"] / max(progress["elapsed_seconds"], 1e-9),
                "elapsed_seconds": round(progress["elapsed_seconds"], 3),
            }
            last_step = step + 1 == hp.total_steps
            ends_epoch = plan.ends_epoch(step) or last_step
            if eval_sample is not None and ((step + 1) % settings.eval_every_steps == 0 or last_step):
                row["valid_loss"], row["valid_mean_token_accuracy"] = _evaluate(
                    accelerator, model, valid_data, eval_sample, hp.micro_batch_size, collate
                )
            if valid_data is not None and ends_epoch:
                row["full_valid_loss"], row["full_valid_mean_token_accuracy"] = _evaluate(
                    accelerator, model, valid_data, range(len(valid_data)), hp.micro_batch_size, collate
                )
            if accelerator.is_main_process:
                metrics.append(row)
                history.append(row)
            last_row = row
            observer.on_step(row)
            watch.observe(row)

            stopping = totals[3].item() > 0
            if (step + 1) % settings.checkpoint_every_steps == 0 or ends_epoch or stopping or watch.wants_checkpoint:
                folder = _write_checkpoint(accelerator, model, tokenizer, layout, progress, settings.keep_checkpoints, watch.protected_steps)
                if accelerator.is_main_process:
                    plot_loss(history, layout.loss_plot)
                sampler.at_checkpoint(model, step + 1)
                observer.on_checkpoint(step + 1, folder)
            if watch.stop and not last_step:
                if accelerator.is_main_process:
                    watch.announce_stop(layout, step + 1)
                break
            if stopping and not last_step:
                raise TrainingPaused(step + 1, layout.checkpoints / checkpoint_name(step + 1))

    watch.restore_best(accelerator, model, layout, progress["step"])
    result = TrainingResult(layout.root, progress["step"], progress["tokens"], layout.final, last_row)
    _export_final(accelerator, model, tokenizer, layout, history, result)
    return result


def _precision(setting: str) -> str:
    if setting != "auto":
        return setting
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def _load_data(field: str, path: str, tokenizer, max_seq_length: int, min_examples: int) -> TokenizedData:
    """The file of the job's `field`; errors name the field, never the server path."""
    try:
        rows = validate_jsonl_file(path, min_examples)
    except DatasetError as error:
        raise InvalidDataError(f"{field} is not a valid fine-tuning file:\n{error}", param=field) from None
    data = tokenize_rows(rows, tokenizer, max_seq_length)
    if len(data) == 0:
        raise InvalidDataError(f"{field}: no example has a target token within max_seq_length={max_seq_length}", param=field)
    return data


def _prepare_output(layout: RunLayout, spec: JobSpec, hp: ResolvedHyperparameters, train_data, valid_data, world: int):
    layout.checkpoints.mkdir(parents=True, exist_ok=True)
    ckpt.remove_partials(layout.checkpoints)  # left by a crash mid-write; never read
    layout.error.unlink(missing_ok=True)  # from an earlier attempt
    given = spec.model_dump(mode="json")
    if layout.spec.exists() and json.loads(layout.spec.read_text()) != given:
        raise OutputConflictError("the run folder holds a run of a different spec; resume needs the same spec, or use a new --output")
    layout.spec.write_text(json.dumps(given, indent=2))
    layout.run.write_text(
        json.dumps(
            {
                "hyperparameters": hp.model_dump(),
                "world_size": world,
                "train_examples": len(train_data),
                "train_truncated": train_data.truncated,
                "train_dropped": train_data.dropped,
                "valid_examples": len(valid_data) if valid_data else 0,
            },
            indent=2,
        )
    )


def _parameter_groups(model, weight_decay: float) -> list[dict]:
    """Like transformers.Trainer: no weight decay on biases and normalisation weights."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (no_decay if name.endswith("bias") or "norm" in name.lower() else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _collator(packing: bool, pad_id: int, max_seq_length: int):
    if packing:
        return lambda examples: collate_packed(examples, pad_id, max_seq_length)
    return lambda examples: collate_padded(examples, pad_id)


def _examples(data: TokenizedData, ids: list[int]) -> list[dict]:
    if not ids:
        # an empty slice of a short last batch: one example with no targets keeps this process
        # in step with the others' gradient reduction while adding nothing
        example = data.examples[0]
        return [{"input_ids": example["input_ids"], "labels": [IGNORE_INDEX] * len(example["labels"])}]
    return list(data.examples.select(ids))


def _targets(batch: dict) -> int:
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


def _forward(model, batch: dict, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Summed next-token cross-entropy, correct predictions and target count of one micro-batch."""
    inputs = {key: value.to(device) for key, value in batch.items() if key != "labels"}
    # shift the labels, not the logits: slicing the logits would copy the largest tensor of the step
    labels = F.pad(batch["labels"], (0, 1), value=IGNORE_INDEX)[:, 1:].to(device)
    # no KV cache: with one, transformers would not build the packed block-diagonal mask
    logits = model(**inputs, use_cache=False).logits
    loss_sum = F.cross_entropy(
        logits.float().view(-1, logits.size(-1)), labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    mask = labels != IGNORE_INDEX
    correct = (logits.detach()[mask].argmax(-1) == labels[mask]).sum().float()
    return loss_sum, correct, mask.sum().float()


def _check_finite(step: int, loss: float, grad_norm: float, learning_rate: float) -> None:
    if math.isfinite(loss) and math.isfinite(grad_norm):
        return
    what = f"loss is {loss}" if not math.isfinite(loss) else f"gradient norm is {grad_norm}"
    raise DivergedError(
        f"step {step}: {what}; training diverged. Lower the learning rate (now {learning_rate:.3g}: set "
        "training.learning_rate or a smaller hyperparameters.learning_rate_multiplier), keep "
        "training.max_grad_norm set, or add warmup (training.warmup_ratio)"
    )


def _fixed_sample(data: TokenizedData, size: int, seed: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(len(data), generator=generator)[:size].tolist())


@torch.no_grad()
def _evaluate(accelerator: Accelerator, model, data: TokenizedData, ids, batch_size: int, collate) -> tuple[float, float]:
    """Loss and token accuracy over `ids`, each process taking every world-th example."""
    model.eval()
    mine = list(ids)[accelerator.process_index :: accelerator.num_processes]
    totals = torch.zeros(3, device=accelerator.device)
    for start in range(0, len(mine), batch_size):
        loss_sum, correct, targets = _forward(model, collate(_examples(data, mine[start : start + batch_size])), accelerator.device)
        totals += torch.stack([loss_sum, correct, targets])
    totals = accelerator.reduce(totals, "sum")
    model.train()
    return (totals[0] / totals[2]).item(), (totals[1] / totals[2]).item()


def _write_checkpoint(accelerator: Accelerator, model, tokenizer, layout: RunLayout, progress: dict, keep: int,
                      protected: set[int] = frozenset()) -> Path:  # fmt: skip
    """All processes take part (save_state writes per-process RNG state); the main one publishes."""
    name = checkpoint_name(progress["step"])
    partial = ckpt.partial_folder(layout.checkpoints, name)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial / ckpt.TRAINING_STATE_DIR))
    state_dict = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        save_model(accelerator.unwrap_model(model), tokenizer, partial, state_dict=state_dict)
        (partial / ckpt.TRAINER_STATE).write_text(json.dumps(progress))
        ckpt.write_manifest(partial)
        ckpt.publish(partial, layout.checkpoints / name)
        ckpt.prune_checkpoints(layout.checkpoints, keep, protected)
    accelerator.wait_for_everyone()
    return layout.checkpoints / name


def _export_final(accelerator: Accelerator, model, tokenizer, layout: RunLayout, history: list[dict], result: TrainingResult):
    accelerator.wait_for_everyone()
    state_dict = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        partial = ckpt.partial_folder(layout.root, "final")
        save_final(accelerator.unwrap_model(model), tokenizer, partial, state_dict=state_dict)
        ckpt.write_manifest(partial)
        ckpt.publish(partial, layout.final)
        plot_loss(history, layout.loss_plot)
        layout.result.write_text(
            json.dumps({"steps": result.steps, "trained_tokens": result.trained_tokens, "last_metrics": result.last_metrics})
        )
    accelerator.wait_for_everyone()


class _SigtermStop:
    """SIGTERM asks the loop to finish the current step, write a checkpoint and stop."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame):
        self.requested = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # only the main thread gets signals
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc_info):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
        return False
