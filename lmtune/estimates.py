"""What a job will cost before it runs: its steps, the tokens it trains on (counted with the model's
tokenizer over the actual file), its duration from the measured speed of earlier jobs, its peak
memory against what the queue's workers have, and warnings (docs/operations.md, "Estimates").

Everything here runs in the API process: no torch, bounded work (at most SAMPLE_EXAMPLES examples
are tokenised; the rest of a larger file is extrapolated by its size).
"""

from __future__ import annotations

import json
import math
import statistics
import struct
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sqlalchemy import select

from lmtune.layout import DataLayout
from lmtune.model_availability import local_folder
from lmtune.model_refs import resolve_model
from lmtune.preference_rows import SIDES
from lmtune.spec import JobSpec, SpecError, resolve_hyperparameters
from lmtune.store import files as file_store
from lmtune.store.database import Database
from lmtune.store.models import Job, JobStatus
from lmtune.store.workers import live_workers
from lmtune.token_count import CHARS_PER_TOKEN, NoTokenizer, TokenCounter, guess_lengths
from lmtune.training_data import Row, iter_rows

SAMPLE_EXAMPLES = 20_000
HISTORY_JOBS = 5  # the newest succeeded jobs alike whose speed is taken (their median)
# A first guess when no job alike has run: 6 FLOPs per parameter per trained token (forward and
# backward), at this many useful FLOP/s, plus a fixed start-up time (loading, the final save).
FIRST_GUESS_FLOPS = {"cpu": 2e10, "gpu": 1e14}
FIRST_GUESS_STARTUP_SECONDS = 30
# Peak memory: fp32 master weights, their gradients and AdamW's two moments (16 bytes a trained
# parameter; LoRA trains few and keeps the base's 4 bytes), plus activations per token of a
# micro-batch per layer, by how much gradient checkpointing keeps (bytes x hidden size), plus a margin.
ACTIVATION_BYTES_PER_HIDDEN = {"off": 80, "selective": 48, "full": 8}
MEMORY_MARGIN = 1.2
GPU_RUNTIME_BYTES = 1 * 2**30  # the CUDA context and allocator slack on each GPU
MEMORY_HEADROOM = 0.9  # what part of a worker's memory a job may count on


class EstimateError(ValueError):
    """Settings that cannot go together for this file (as the job would fail at start)."""


@dataclass
class Estimate:
    model: str
    queue: str
    total_steps: int
    hyperparameters: dict
    examples: dict  # training, validation, truncated, dropped
    tokens: dict  # per_epoch, trained, counted_with
    estimated_seconds: float | None
    estimated_seconds_basis: str
    memory: dict  # estimated_bytes, available_bytes, per (gpu|cpu), fits
    warnings: list[str] = field(default_factory=list)
    object: str = "fine_tuning.job.estimate"

    def as_dict(self) -> dict:
        return asdict(self)


def estimate_job(db: Database, data: DataLayout, owner: str, spec: JobSpec, queue: str, gpus: int) -> Estimate:
    """`spec` with model and files checked for `owner` (lmtune.services.check_inputs)."""
    ref = resolve_model(db, data, spec.model, owner)
    folder = local_folder(ref)
    warnings: list[str] = []
    training = file_store.get_file(db, spec.training_file, owner)
    counted, counted_with = _count(data.resolve(training.path), training.examples, folder, spec, warnings)
    kept = training.examples - counted["dropped"]
    try:
        hp = resolve_hyperparameters(spec, max(kept, 1), max(gpus, 1))
    except SpecError as error:
        raise EstimateError(str(error)) from None
    steps_per_epoch = math.ceil(max(kept, 1) / hp.batch_size)
    trained = round(counted["per_epoch"] * hp.total_steps / steps_per_epoch)
    config = _read_config(folder)
    parameters = parameter_count(Path(ref.base.source) if ref.adapter and ref.base else folder)
    seconds, basis = _duration(db, spec, queue, gpus, trained, parameters)
    memory = _memory(db, spec, queue, gpus, hp.micro_batch_size, counted["longest_kept"], config, parameters)
    warnings += _warnings(spec, hp, kept, training.examples, counted, memory, queue)
    validation = file_store.get_file(db, spec.validation_file, owner) if spec.validation_file else None
    return Estimate(
        model=spec.model,
        queue=queue,
        total_steps=hp.total_steps,
        hyperparameters={
            "n_epochs": hp.n_epochs,
            "batch_size": hp.batch_size,
            "learning_rate_multiplier": hp.learning_rate_multiplier,
            "learning_rate": hp.learning_rate,
            **({"beta": hp.beta} if hp.beta is not None else {}),
        },
        examples={
            "training": training.examples,
            "validation": validation.examples if validation else 0,
            "truncated": counted["truncated"],
            "dropped": counted["dropped"],
        },
        tokens={"per_epoch": counted["per_epoch"], "trained": trained, "counted_with": counted_with},
        estimated_seconds=seconds,
        estimated_seconds_basis=basis,
        memory=memory,
        warnings=warnings,
    )


def _as_counted(row: Row) -> list[Row]:
    """A preference pair counts as its two conversations: the trainer runs both."""
    if row.shape != "preference":
        return [row]
    given = row.data["input"]
    extra = {key: given[key] for key in ("tools", "parallel_tool_calls") if key in given}
    return [Row(row.line, "chat", {"messages": [*given["messages"], *row.data[side]], **extra}) for side in SIDES]


def _count(path: Path, examples: int, folder: Path | None, spec: JobSpec, warnings: list[str]) -> tuple[dict, str]:
    rows, sampled = [], 0
    for row in iter_rows(path, min_examples=1):
        rows += _as_counted(row)
        sampled += 1
        if len(rows) >= SAMPLE_EXAMPLES:
            break
    max_len = spec.training.max_seq_length
    try:
        if folder is None:
            raise NoTokenizer("the model's files are not on the API's machine yet")
        counted = TokenCounter(folder).count(rows, max_len)
        how = "tokenizer"
    except NoTokenizer as why:
        counted = guess_lengths(rows, max_len)
        how = "guess"
        warnings.append(
            f"tokens are guessed at {CHARS_PER_TOKEN} characters each: {why} (a job of this model run once makes them exact)"
        )
    scale = examples / sampled if sampled else 1.0
    if scale > 1:
        how += f" (first {sampled:,} examples, the rest extrapolated)"
    return {
        "per_epoch": round(sum(counted.lengths) * scale),
        "truncated": round(counted.truncated * scale),
        "dropped": round(counted.dropped * scale),
        "longest": counted.longest,
        "longest_kept": max(counted.lengths, default=0),
    }, how


def _alike(spec: JobSpec, other: dict) -> bool:
    mine, theirs = spec.training, other.get("training", {})
    return (
        (mine.lora is None) == (theirs.get("lora") is None)
        and mine.packing == theirs.get("packing", False)
        and mine.gradient_checkpointing == theirs.get("gradient_checkpointing", "selective")
    )


def _duration(
    db: Database, spec: JobSpec, queue: str, gpus: int, tokens: int, parameters: int | None
) -> tuple[float | None, str]:
    """From the newest succeeded jobs of the same model and training options on the queue (their median
    speed and start-up time); else of the same model on the queue; else the first guess."""
    with db.session() as session:
        earlier = session.execute(
            select(Job.spec, Job.latest_metrics, Job.started_at, Job.finished_at)
            .where(Job.status == JobStatus.SUCCEEDED, Job.queue == queue, Job.spec["model"].as_string() == spec.model)
            .order_by(Job.finished_at.desc())
            .limit(50)
        ).all()
    measured = [row for row in earlier if (row.latest_metrics or {}).get("tokens_per_second") and row.started_at]
    alike = [row for row in measured if _alike(spec, row.spec)][:HISTORY_JOBS]
    chosen, which = (
        (alike, "the same model and training options") if alike else (measured[:HISTORY_JOBS], "the same model")
    )
    if chosen:
        speed = statistics.median(row.latest_metrics["tokens_per_second"] for row in chosen)
        startup = statistics.median(
            max(0.0, row.finished_at - row.started_at - row.latest_metrics.get("elapsed_seconds", 0)) for row in chosen
        )
        basis = f"measured: {len(chosen)} earlier job{'s' * (len(chosen) > 1)} of {which} on {queue} ({speed:,.0f} tokens/s)"
        return round(startup + tokens / speed, 1), basis
    if parameters is None:
        return None, "unknown: no earlier job of this model on this queue, and its size is not known here"
    flops = FIRST_GUESS_FLOPS["gpu"] * gpus if gpus else FIRST_GUESS_FLOPS["cpu"]
    speed = flops / (6 * parameters)
    basis = (
        f"first guess: no earlier job of this model on {queue}; 6 x {parameters:,} FLOPs a token at {flops:.0e} FLOP/s"
    )
    return round(FIRST_GUESS_STARTUP_SECONDS + tokens / speed, 1), basis


def _memory(db, spec, queue, gpus, micro_batch, longest, config: dict, parameters: int | None) -> dict:
    per = "gpu" if gpus else "cpu"
    available = _available(db, queue, per)
    if parameters is None:
        return {"estimated_bytes": None, "available_bytes": available, "per": per, "fits": None}
    training = spec.training
    hidden = config.get("hidden_size") or config.get("n_embd") or 0
    layers = config.get("num_hidden_layers") or config.get("n_layer") or 0
    if training.lora is None:
        states = 16 * parameters
    else:  # the base's weights, and about r x 2 x hidden per linear layer trained
        adapters = training.lora.r * 2 * hidden * 7 * layers
        states = 4 * parameters + 16 * adapters
    tokens = micro_batch * (training.max_seq_length if training.packing else longest)
    activations = tokens * layers * hidden * ACTIVATION_BYTES_PER_HIDDEN[training.gradient_checkpointing]
    estimated = int((states + activations) * MEMORY_MARGIN) + (GPU_RUNTIME_BYTES if gpus else 0)
    fits = None if available is None else estimated <= available * MEMORY_HEADROOM
    return {"estimated_bytes": estimated, "available_bytes": available, "per": per, "fits": fits}


def _available(db: Database, queue: str, per: str) -> int | None:
    """The least that a live worker of the queue has: one GPU's memory (each holds the whole model
    under data parallelism), or its RAM on a CPU queue."""
    sizes = []
    for worker in live_workers(db, time.time(), queue):
        if per == "gpu":
            sizes += worker.gpu_memory_bytes or []
        elif worker.memory_bytes:
            sizes.append(worker.memory_bytes)
    return min(sizes) if sizes else None


def _warnings(spec: JobSpec, hp, kept: int, examples: int, counted: dict, memory: dict, queue: str) -> list[str]:
    found = []
    max_len = spec.training.max_seq_length
    if counted["truncated"]:
        found.append(
            f"{counted['truncated']:,} examples are longer than training.max_seq_length={max_len} tokens and will be "
            f"cut from the end (the longest has {counted['longest']:,}); raise it to keep them whole"
        )
    if counted["dropped"]:
        found.append(
            f"{counted['dropped']:,} examples have no answer token within max_seq_length={max_len} and will be skipped"
        )
    if hp.batch_size > kept:
        found.append(
            f"hyperparameters.batch_size={hp.batch_size} is more than the {kept:,} examples: every step takes them all"
        )
    if spec.training.max_steps is not None and hp.total_steps == spec.training.max_steps:
        found.append(f"training.max_steps={spec.training.max_steps} stops the job before its {hp.n_epochs} epochs end")
    if memory["fits"] is False:
        found.append(
            f"the job needs about {memory['estimated_bytes'] / 2**30:.1f} GiB of {memory['per'].upper()} memory; the "
            f"workers of {queue} have {memory['available_bytes'] / 2**30:.1f} GiB: use training.lora, "
            "training.gradient_checkpointing: full, a smaller batch_size or max_seq_length"
        )
    if memory["available_bytes"] is None:
        found.append(f"no worker is taking jobs from queue {queue} now: the job will wait until one starts")
    return found


def _read_config(folder: Path | None) -> dict:
    try:
        return json.loads((folder / "config.json").read_text()) if folder else {}
    except (OSError, ValueError):
        return {}


def parameter_count(folder: Path | None) -> int | None:
    """Parameters in the folder's safetensors files, from their headers alone (no weights read)."""
    files = sorted(folder.glob("*.safetensors")) if folder and folder.is_dir() else []
    if not files:
        return None
    total = 0
    for path in files:
        with path.open("rb") as handle:
            size = struct.unpack("<Q", handle.read(8))[0]
            header = json.loads(handle.read(size))
        total += sum(math.prod(entry["shape"]) for key, entry in header.items() if key != "__metadata__")
    return total
