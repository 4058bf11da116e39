"""The training function: one job spec in, a trained model and its records out.

`train` reads as the run's phases: `_setup` (data, model, optimizer, resume), then per step
`_train_step` (micro-batches, clip, optimizer step), `_evaluate`, `_record` and `_checkpoint` (with
its sample answers), then `_export_final` (from the best checkpoint with keep_best). Early stopping
ends the steps once the validation loss stops improving. The `Observer` is told of each step and
checkpoint. It runs the same under the CLI, a Celery worker, a test, or `torchrun` with several
processes.

What differs between training methods (the rows and their batches, the loss and its metrics, what
evaluation measures, state of their own) is the job's `Objective` (workers/training/objectives/);
this loop is the same for every method.
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import broadcast_object_list, set_seed
from transformers import get_scheduler
from transformers.utils import logging as transformers_logging

from lmtune.fence import RunFence
from lmtune.layout import RunLayout, checkpoint_name, latest_checkpoint, write_manifest
from lmtune.metrics_log import MetricsLog
from lmtune.spec import JobSpec, ResolvedHyperparameters, resolve_hyperparameters
from lmtune.training_data import MIN_EXAMPLES
from workers.models.loading import check_context_length, load_tokenizer, save_final, save_model
from workers.training import checkpoints as ckpt
from workers.training.errors import DivergedError, OutputConflictError, TrainingPaused
from workers.training.eval_scores import EvalScores
from workers.training.loss_plot import plot_loss
from workers.training.model_setup import load_model, mergeable_copy, require_quantization
from workers.training.objectives import objective_for
from workers.training.objectives.base import Examples, Objective, RunContext, objective_state_file
from workers.training.observer import Observer
from workers.training.parallelism import is_sharded, make_accelerator
from workers.training.sampling import Sampler
from workers.training.step_plan import StepPlan
from workers.training.validation_watch import ValidationWatch


@dataclass
class TrainingResult:
    output_dir: Path
    steps: int
    trained_tokens: int  # every token trained on (OpenAI's billable count), not only those with loss
    final_dir: Path
    last_metrics: dict

    @classmethod
    def read(cls, layout: RunLayout) -> TrainingResult:
        data = json.loads(layout.result.read_text())
        return cls(layout.root, data["steps"], data["trained_tokens"], layout.final, data["last_metrics"])


@dataclass
class Progress:
    """The run so far; a checkpoint keeps it (trainer_state.json) and a resume starts from it."""

    step: int = 0
    tokens: int = 0  # every non-padding token processed
    target_tokens: int = 0  # the tokens that carry loss
    elapsed_seconds: float = 0.0

    @classmethod
    def read(cls, checkpoint: Path) -> Progress:
        saved = ckpt.read_trainer_state(checkpoint)
        return cls(**{f.name: saved[f.name] for f in fields(cls) if f.name in saved})


@dataclass
class _Run:
    """What `_setup` builds and the steps use."""

    spec: JobSpec
    model_name: str  # what the user calls spec.model
    layout: RunLayout
    accelerator: Accelerator
    hp: ResolvedHyperparameters
    plan: StepPlan
    tokenizer: object
    objective: Objective
    context: RunContext  # what the objective's hooks see
    train_data: Examples
    valid_data: Examples | None
    eval_sample: list[int] | None
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    metrics: MetricsLog
    progress: Progress
    fence: RunFence  # a superseded attempt stops before its next write
    sampler: Sampler  # sample answers at each checkpoint
    watch: ValidationWatch  # early stopping and the best checkpoint
    eval_scores: EvalScores | None  # training.eval_id's scores at each evaluation
    history: list[dict] = field(default_factory=list)  # metric rows, on the main process
    last_row: dict = field(default_factory=dict)
    session_start: float = field(default_factory=time.monotonic)
    elapsed_before: float = 0.0


@dataclass
class _Step:
    row: dict  # the step's metrics
    stop_requested: bool  # SIGTERM reached some process


def train(
    spec: JobSpec, output_dir: str | Path, observer: Observer | None = None, model_name: str | None = None
) -> TrainingResult:
    """`model_name`: what the user calls `spec.model` (a catalogue name), used in messages and saved
    files instead of the local folder the weights come from."""
    observer = observer or Observer()
    transformers_logging.disable_progress_bar()  # lmtune's own bar is the one to show
    layout = RunLayout(Path(output_dir))
    if layout.result.exists():  # a repeated delivery of a finished run: nothing to redo
        return TrainingResult.read(layout)
    fence = RunFence.from_env(layout)
    fence.check()

    run = _setup(spec, layout, model_name or spec.model, fence)
    total_steps = run.hp.total_steps
    observer.on_start(total_steps=total_steps, start_step=run.progress.step)
    with _SigtermStop() as stop:
        for step in range(run.progress.step, total_steps):
            fence.check()
            done = _train_step(run, step, stop)
            last_step = step + 1 == total_steps
            ends_epoch = run.plan.ends_epoch(step) or last_step
            _evaluate_if_due(run, done.row, last_step, ends_epoch)
            _record(run, done.row)
            observer.on_step(done.row)
            run.watch.observe(done.row)
            if (
                (step + 1) % spec.training.checkpoint_every_steps == 0
                or ends_epoch
                or done.stop_requested
                or run.watch.wants_checkpoint
            ):
                observer.on_checkpoint(step + 1, _checkpoint(run))
            if run.watch.stop and not last_step:
                if run.accelerator.is_main_process:
                    run.watch.announce_stop(run.layout, step + 1)
                break
            if done.stop_requested and not last_step:
                raise TrainingPaused(step + 1)
    return _export_final(run)


def _setup(spec: JobSpec, layout: RunLayout, model_name: str, fence: RunFence) -> _Run:
    training = spec.training
    # train() may run many times in one process (tests, notebooks); each run sets its own precision.
    # The process group (PartialState) is kept.
    AcceleratorState._reset_state()
    accelerator = make_accelerator(training, _precision(training.mixed_precision))
    world = accelerator.num_processes
    require_quantization(training)

    # data: validated whole before any compute
    tokenizer = load_tokenizer(spec.model, model_name)
    context = check_context_length(spec.model, model_name, training.max_seq_length)
    objective = objective_for(spec, tokenizer)
    train_data = objective.load_data("training_file", spec.training_file, MIN_EXAMPLES)
    valid_data = (
        objective.load_data("validation_file", spec.validation_file, min_examples=1) if spec.validation_file else None
    )
    hp = resolve_hyperparameters(spec, len(train_data), world)
    # the sample prompts, counted in tokens against the context, before any compute
    sampler = Sampler(spec, tokenizer, layout, accelerator, context, hp.total_steps, grade=objective.grade_samples)
    eval_scores = EvalScores(spec, layout, tokenizer, context) if training.eval_id else None
    plan = StepPlan(
        len(train_data), hp.batch_size, training.gradient_accumulation_steps, world, spec.seed, training.shuffle
    )
    if accelerator.is_main_process:
        _prepare_output(layout, spec, hp, train_data, valid_data, world)
    accelerator.wait_for_everyone()

    # model, optimizer, schedule; resumed from the newest complete checkpoint if there is one
    set_seed(spec.seed)
    resume = _agreed_checkpoint(layout, accelerator)
    model = load_model(spec.model, training, resume[1] if resume else None, name=model_name)
    objective.attach(model, accelerator)
    # fused: one kernel for all parameters, as transformers.Trainer uses by default
    optimizer = torch.optim.AdamW(_parameter_groups(model, training.weight_decay), lr=hp.learning_rate, fused=True)
    scheduler = get_scheduler(
        training.lr_scheduler,
        optimizer,
        num_warmup_steps=math.ceil(training.warmup_ratio * hp.total_steps),
        num_training_steps=hp.total_steps,
    )
    # the scheduler is not prepared: Accelerate would step it once per process
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    # weights live once, in Hugging Face format beside training_state/; save_state keeps the rest
    accelerator.register_save_state_pre_hook(lambda models, weights, folder: weights.clear())
    accelerator.register_load_state_pre_hook(lambda models, folder: models.clear())

    metrics = MetricsLog(layout.metrics)
    progress = Progress()
    if resume:
        accelerator.load_state(str(resume[1] / ckpt.TRAINING_STATE_DIR))
        progress = Progress.read(resume[1])
        if objective_state_file(resume[1]).exists():
            objective.load_state_dict(torch.load(objective_state_file(resume[1]), weights_only=True))
    if accelerator.is_main_process:  # rows past the step this run starts at (0 without a checkpoint) come again
        metrics.truncate_after(progress.step)
    history = metrics.read() if accelerator.is_main_process else []
    # every process judges the validation loss alike (all stop together); rows past the start come again
    watch = ValidationWatch(training, [row for row in metrics.read() if row["step"] <= progress.step])
    run_context = RunContext(spec, layout, accelerator, model, tokenizer, fence, train_data, valid_data)
    objective.before_training(run_context)
    return _Run(
        spec=spec,
        model_name=model_name,
        layout=layout,
        accelerator=accelerator,
        hp=hp,
        plan=plan,
        tokenizer=tokenizer,
        objective=objective,
        context=run_context,
        train_data=train_data,
        valid_data=valid_data,
        eval_sample=_fixed_sample(valid_data, objective.eval_sample_size, spec.seed) if valid_data else None,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        metrics=metrics,
        progress=progress,
        fence=fence,
        sampler=sampler.starting_at(progress.step),
        watch=watch,
        eval_scores=eval_scores,
        history=history,
        last_row=history[-1] if history else {},
        elapsed_before=progress.elapsed_seconds,
    )


def _train_step(run: _Run, step: int, stop: _SigtermStop) -> _Step:
    """One optimizer step over this process's micro-batches; the metrics are global."""
    accelerator, model, training, objective = run.accelerator, run.model, run.spec.training, run.objective
    model.train()
    batches = objective.step_batches(run.context, step, run.plan.micro_batches(step, accelerator.process_index))
    step_units = accelerator.reduce(
        torch.tensor(sum(batch.units for batch in batches), device=accelerator.device), "sum"
    ).item()
    # the objective's loss, metrics and units, then tokens, target tokens and the stop flag
    reported = 2 + len(objective.metric_names)
    totals = torch.zeros(reported + 3, device=accelerator.device)
    for batch in batches:
        with accelerator.accumulate(model):
            sums = objective.loss(model, batch)
            # mean over every unit of the global step; undo DDP's mean over processes
            # and Accelerate's division by the accumulation steps
            scale = accelerator.num_processes * training.gradient_accumulation_steps / step_units
            accelerator.backward(sums.loss * scale)
            totals[:reported] += objective.stack(sums, batch.units)
            totals[reported:-1] += torch.tensor([batch.tokens, batch.target_tokens], device=accelerator.device)
    grad_norm = float(accelerator.clip_grad_norm_(model.parameters(), training.max_grad_norm or math.inf))
    totals[-1] = float(stop.requested)
    *values, tokens, target_tokens, stopping = accelerator.reduce(totals, "sum").tolist()
    train = objective.unstack(values)
    learning_rate = run.scheduler.get_last_lr()[0]
    _check_finite(step + 1, train["loss"], grad_norm, learning_rate)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)

    progress = run.progress
    progress.step = step + 1
    progress.tokens += int(tokens)
    progress.target_tokens += int(target_tokens)
    progress.elapsed_seconds = run.elapsed_before + time.monotonic() - run.session_start
    row = {
        "step": step + 1,
        "total_steps": run.hp.total_steps,
        "epoch": round((step + 1) / run.plan.steps_per_epoch, 4),
        **_prefixed("train_", train),
        "learning_rate": learning_rate,
        "grad_norm": grad_norm,
        "tokens": progress.tokens,
        "target_tokens": progress.target_tokens,
        "tokens_per_second": progress.tokens / max(progress.elapsed_seconds, 1e-9),
        "elapsed_seconds": round(progress.elapsed_seconds, 3),
    }
    return _Step(row, stopping > 0)


def _evaluate_if_due(run: _Run, row: dict, last_step: bool, ends_epoch: bool) -> None:
    """The fixed validation sample every eval_every_steps (with training.eval_id's scores), the whole
    validation set at epoch ends (as the objective says)."""
    objective = run.objective
    if run.eval_sample is not None and (row["step"] % objective.eval_every_steps == 0 or last_step):
        row.update(_prefixed("valid_", _evaluate(run, run.eval_sample)))
        if run.eval_scores is not None:
            run.model.eval()
            row.update(_prefixed("valid_", run.eval_scores.measure(run.model, run.accelerator)))
            run.model.train()
    if run.valid_data is not None and ends_epoch and objective.evaluates_whole_file:
        row.update(_prefixed("full_valid_", _evaluate(run, list(range(len(run.valid_data))))))


def _prefixed(prefix: str, values: dict[str, float]) -> dict[str, float]:
    """The metrics.jsonl columns of an objective's reported values: train_loss, valid_loss, ..."""
    return {prefix + name: value for name, value in values.items()}


def _record(run: _Run, row: dict) -> None:
    if run.accelerator.is_main_process:
        run.fence.check()
        run.metrics.append(row)
        run.history.append(row)
    run.last_row = row


def _precision(setting: str) -> str:
    if setting != "auto":
        return setting
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def _agreed_checkpoint(layout: RunLayout, accelerator: Accelerator) -> tuple[int, Path] | None:
    """The newest complete checkpoint as the main process sees it, for every process: on a shared
    file system another node's listing may lag and name an older one."""
    choice = [latest_checkpoint(layout.checkpoints) if accelerator.is_main_process else None]
    return broadcast_object_list(choice)[0]


def _prepare_output(layout: RunLayout, spec: JobSpec, hp: ResolvedHyperparameters, train_data, valid_data, world: int):
    RunFence.from_env(layout).check()  # loading the model took a while: the folder may be another's by now
    layout.checkpoints.mkdir(parents=True, exist_ok=True)
    ckpt.remove_partials(layout.checkpoints)  # left by a crash mid-write; never read
    layout.error.unlink(missing_ok=True)  # from an earlier attempt
    given = spec.model_dump(mode="json")
    if layout.spec.exists() and json.loads(layout.spec.read_text()) != given:
        raise OutputConflictError(
            "the run folder holds a run of a different spec; resume needs the same spec, or use a new --output"
        )
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


def _check_finite(step: int, loss: float, grad_norm: float, learning_rate: float) -> None:
    if math.isfinite(loss) and math.isfinite(grad_norm):
        return
    what = f"loss is {loss}" if not math.isfinite(loss) else f"gradient norm is {grad_norm}"
    raise DivergedError(
        f"step {step}: {what}; training diverged. Lower the learning rate (now {learning_rate:.3g}: set "
        "training.learning_rate or a smaller hyperparameters.learning_rate_multiplier), keep "
        "training.max_grad_norm set, or add warmup (training.warmup_ratio)"
    )


def _fixed_sample(data: Examples, size: int, seed: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(len(data), generator=generator)[:size].tolist())


def _evaluate(run: _Run, ids: list[int]) -> dict[str, float]:
    """The objective's measure of validation examples `ids`."""
    run.model.eval()
    values = run.objective.evaluate(run.context, ids, run.hp.micro_batch_size)
    run.model.train()
    return values


def _checkpoint(run: _Run) -> Path:
    folder = _write_checkpoint(
        run.accelerator,
        run.model,
        run.tokenizer,
        run.layout,
        run.progress,
        run.spec.training.keep_checkpoints,
        run.fence,
        run.watch.protected_steps,
        run.objective.state_dict(),
    )
    if run.accelerator.is_main_process:
        plot_loss(run.history, run.layout.loss_plot)
    run.sampler.at_checkpoint(run.model, run.progress.step)
    return folder


def _write_checkpoint(
    accelerator: Accelerator,
    model,
    tokenizer,
    layout: RunLayout,
    progress: Progress,
    keep: int,
    fence: RunFence,
    protected: set[int] = frozenset(),
    objective_state: dict | None = None,
) -> Path:
    """All processes take part (save_state writes per-process RNG state); the main one publishes.
    `protected`: steps kept from pruning (the best one, with keep_best); `objective_state`: the
    objective's own, written when it has any."""
    name = checkpoint_name(progress.step)
    partial = ckpt.partial_folder(layout.checkpoints, name)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial / ckpt.TRAINING_STATE_DIR))
    # every process's part (its RNG state; with FSDP its shards) is on disk before the main process
    # lists and renames the folder: a process on another node may still be writing when it is done
    accelerator.wait_for_everyone()
    state_dict = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        save_model(accelerator.unwrap_model(model), tokenizer, partial, state_dict=state_dict)
        (partial / ckpt.TRAINER_STATE).write_text(json.dumps(asdict(progress)))
        if objective_state:
            torch.save(objective_state, objective_state_file(partial))
        # a sharded training state is the run's own (per-process shards): kept to resume, never served
        write_manifest(partial, leave_out=ckpt.TRAINING_STATE_DIR if is_sharded(accelerator) else None)
        fence.check()
        ckpt.publish(partial, layout.checkpoints / name)
        ckpt.prune_checkpoints(layout.checkpoints, keep, protected)
    accelerator.wait_for_everyone()
    return layout.checkpoints / name


def _export_final(run: _Run) -> TrainingResult:
    accelerator, layout = run.accelerator, run.layout
    run.watch.restore_best(accelerator, run.model, layout, run.progress.step)
    result = TrainingResult(layout.root, run.progress.step, run.progress.tokens, layout.final, run.last_row)
    accelerator.wait_for_everyone()
    state_dict = accelerator.get_state_dict(run.model)
    if accelerator.is_main_process:
        partial = ckpt.partial_folder(layout.root, "final")
        save_final(_final_model(run, state_dict), run.tokenizer, partial, state_dict=state_dict)
        write_manifest(partial)
        run.fence.check()
        ckpt.publish(partial, layout.final)
        plot_loss(run.history, layout.loss_plot)
        run.fence.write(
            layout.result,
            json.dumps(
                {"steps": result.steps, "trained_tokens": result.trained_tokens, "last_metrics": result.last_metrics}
            ),
        )
    accelerator.wait_for_everyone()
    return result


def _final_model(run: _Run, state_dict: dict):
    """What save_final writes: the trained model, or for LoRA on a 4-bit or sharded base, the adapter
    on a plain copy of the base that it can be merged into."""
    model, lora = run.accelerator.unwrap_model(run.model), run.spec.training.lora
    if lora is None or not (lora.quantize or is_sharded(run.accelerator)):
        return model
    return mergeable_copy(model, run.spec.model, run.spec.training, run.model_name, state_dict)


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
