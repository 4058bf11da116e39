"""The job spec: the single definition of a fine-tuning job.

The same model is the API body, a YAML preset, the stored row and the trainer's input. Unknown keys
are refused everywhere so that a typo never silently falls back to a default.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic import Tag as Branch

from lmtune.bounds import MAX_BATCH_SIZE, at_most_items
from lmtune.methods import (
    DpoMethod,
    Hyperparameters,
    Method,
    ReinforcementMethod,
    SupervisedMethod,
    fold_hyperparameters,
)
from lmtune.problems import summarize
from lmtune.reinforcement import GrpoOptions

# What "auto" resolves to; see `resolve_hyperparameters` and README.md.
AUTO_EPOCHS = 3
AUTO_MIN_EXAMPLES_SEEN = 100
AUTO_MAX_EXAMPLES_SEEN = 25_000
AUTO_MAX_EPOCHS = 25
AUTO_BATCH_FRACTION = 0.002
MESSAGE_CHARS = 300  # of one field's problem: a pydantic message never quotes a whole value
LOCATION_PART_CHARS = 64  # of each part of a field's path (an unknown key is a client's text)
MAX_SAMPLE_PROMPTS = 8
MAX_SAMPLE_PROMPT_CHARS = 4000  # of one prompt or message
MAX_SAMPLE_PROMPTS_CHARS = 16_000  # of all the sample prompts together
# The work of sampling, bounded whatever the options: a checkpoint's set (every prompt's tokens plus
# sample_max_tokens for each answer) at most this many tokens, counted when the trainer starts...
MAX_SAMPLE_SET_TOKENS = 16_384
# ...and at most this many sets in a run (with more checkpoints, sets are taken at evenly spaced ones)
MAX_SAMPLE_SETS = 100


class SpecError(ValueError):
    """A job spec that cannot be used; the message names each bad field."""


# Upper bounds no real job needs to pass; they keep a hostile body from asking for absurd work.
MAX_TARGET_MODULES = 64
MAX_MODULE_NAME = 128
MAX_SEQ_LENGTH = 131_072
MAX_PATH_CHARS = 4096
# far past any useful rate (AdamW: 1e-6..1e-2); rates below it that diverge fail as training_diverged
MAX_LEARNING_RATE = 1e5
ModuleName = Annotated[str, Field(min_length=1, max_length=MAX_MODULE_NAME)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LoraOptions(_Strict):
    r: int = Field(8, ge=1, le=1024)
    alpha: float = Field(16, gt=0, le=4096, allow_inf_nan=False)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: Annotated[
        Literal["all-linear"] | Annotated[list[ModuleName], Field(max_length=MAX_TARGET_MODULES)],
        at_most_items(MAX_TARGET_MODULES),
        Field(
            description=f'"all-linear" or up to {MAX_TARGET_MODULES} module names (suffixes such as q_proj); '
            "a name that matches no module of the model fails the job at start"
        ),
    ] = "all-linear"
    quantize: Literal["4bit"] | None = None
    """QLoRA: the frozen base held in 4-bit NF4 (bitsandbytes), the adapter trained in the run's
    precision. Needs a CUDA worker with bitsandbytes (docs/multi-gpu.md); elsewhere the job fails at
    once with `quantization_unavailable`."""


class SampleMessage(_Strict):
    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=MAX_SAMPLE_PROMPT_CHARS)


SamplePrompt = (
    Annotated[str, Field(max_length=MAX_SAMPLE_PROMPT_CHARS)]
    | Annotated[list[SampleMessage], Field(min_length=1, max_length=16)]
)


MetricName = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^valid_[a-z0-9_]+$")]


class FollowedMetric(_Strict):
    """A validation metric to follow: `valid_loss` (the default), another `valid_` column of the
    method, or an eval's score `valid_eval_<criterion>` / `valid_eval_pass_rate` (training.eval_id).
    `mode`: whether lower or higher is better; by default lower for a loss (`*_loss`), higher for
    anything else (scores, accuracy, rewards)."""

    metric: MetricName = "valid_loss"
    mode: Literal["min", "max"] | None = None

    @property
    def higher_is_better(self) -> bool:
        return self.mode == "max" if self.mode else not self.metric.endswith("_loss")


class EarlyStopping(FollowedMetric):
    """Stop when the followed metric (by default the periodic `valid_loss`) has not improved by more
    than `min_delta` for `patience` evaluations in a row."""

    patience: int = Field(3, ge=1, le=1000)
    min_delta: float = Field(0.0, ge=0, allow_inf_nan=False)


class KeepBest(FollowedMetric):
    """`keep_best: {"metric": ..., "mode": ...}`: keep the best checkpoint by that metric."""


def _checkpointing_mode(value: Any) -> Any:
    return {True: "full", False: "off"}.get(value, value) if isinstance(value, bool) else value


class TrainingOptions(_Strict):
    """lmtune's own training options, all optional."""

    learning_rate: float | None = Field(None, gt=0, le=MAX_LEARNING_RATE, allow_inf_nan=False)
    """Absolute learning rate; wins over hyperparameters.learning_rate_multiplier. A rate that
    diverges stops the run at the step where the loss or gradient stops being finite."""
    lr_scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0, le=1)
    max_grad_norm: float | None = Field(1.0, gt=0, le=1e4, allow_inf_nan=False)
    """Clip the global gradient norm to this; null turns clipping off (the norm is still logged)."""
    gradient_accumulation_steps: int = Field(1, ge=1, le=1024)
    max_seq_length: int = Field(512, ge=8, le=MAX_SEQ_LENGTH)
    """Also checked against the model's context length when the job starts."""
    shuffle: bool = True
    max_steps: int | None = Field(None, ge=1, le=10_000_000)
    eval_every_steps: int = Field(10, ge=1, le=1_000_000)
    eval_sample_size: int = Field(64, ge=1, le=100_000)
    """How many validation examples the periodic `valid_loss` is measured on (a fixed sample)."""
    checkpoint_every_steps: int = Field(50, ge=1, le=1_000_000)
    keep_checkpoints: int = Field(3, ge=1, le=100)
    packing: bool = False
    lora: LoraOptions | None = None
    gradient_checkpointing: Annotated[Literal["selective", "full", "off"], BeforeValidator(_checkpointing_mode)] = (
        "selective"
    )
    """Activations recomputed in backward instead of kept: "selective" recomputes only the cheap ops
    (same numbers, less memory; no slower on real models, about a tenth slower on tiny ones), "full"
    whole layers (least memory, one more forward pass), "off" none. true and false, its values
    before, mean "full" and "off"."""
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    parallelism: Literal["ddp", "fsdp"] = "ddp"
    """How the job's processes share the work (docs/multi-gpu.md): "ddp" keeps a whole copy of the
    model in each; "fsdp" shards weights, gradients and optimizer state across them (FSDP2), for
    models that do not fit on one GPU. Same per-step losses either way."""
    sample_prompts: list[SamplePrompt] | None = Field(None, max_length=MAX_SAMPLE_PROMPTS)
    """Prompts answered (greedily) at each checkpoint, into samples.jsonl: plain strings or chat
    messages, up to MAX_SAMPLE_PROMPTS_CHARS characters in all. Unset: the first few prompts of the
    validation file (or the training file). When the trainer starts, each prompt and its answer must
    fit the model's context, and a set at most MAX_SAMPLE_SET_TOKENS tokens; a run takes at most
    MAX_SAMPLE_SETS sets."""
    sample_max_tokens: int = Field(64, ge=1, le=1024)
    early_stopping: EarlyStopping | None = None
    keep_best: Annotated[
        Annotated[bool, Branch("bool")] | Annotated[KeepBest, Branch("keep_best")],
        # one branch's errors, not both; the tag repeats the field's name, which error_location says once
        Discriminator(lambda value: "bool" if isinstance(value, bool) else "keep_best"),
    ] = False
    """Keep the best checkpoint from pruning; it becomes the final model. true: the lowest
    validation loss; or `{"metric", "mode"}` to follow another validation metric."""
    eval_id: str | None = Field(None, min_length=1, max_length=64)
    """lmtune's: an eval of this key scored on the validation rows at each evaluation, as metrics
    `valid_eval_<criterion>` and `valid_eval_pass_rate` (docs/evals.md)."""
    eval_max_tokens: int = Field(64, ge=1, le=1024)
    """The longest answer, in tokens, that training.eval_id's evaluations generate."""
    grpo: GrpoOptions | None = None
    """Reinforcement fine-tuning's GRPO options (docs/rft.md); only with method reinforcement."""

    @property
    def best_by(self) -> KeepBest | None:
        """What keep_best follows, or None without keep_best."""
        return KeepBest() if self.keep_best is True else self.keep_best or None

    def followed_scores(self) -> dict[str, str]:
        """`training.<field>.metric` -> the eval score it follows, for fields that follow one."""
        followed = {"training.early_stopping.metric": self.early_stopping, "training.keep_best.metric": self.best_by}
        return {name: f.metric for name, f in followed.items() if f and f.metric.startswith("valid_eval_")}

    @field_validator("sample_prompts")
    @classmethod
    def _sample_prompts_in_all(cls, prompts: list | None) -> list | None:
        chars = sum(len(p) if isinstance(p, str) else sum(len(m.content) for m in p) for p in prompts or [])
        if chars > MAX_SAMPLE_PROMPTS_CHARS:
            raise ValueError(
                f"the sample prompts have {chars:,} characters in all; at most {MAX_SAMPLE_PROMPTS_CHARS:,} are allowed"
            )
        return prompts


MAX_TRACKER_TAGS = 50  # W&B's limits, as OpenAI states them
MAX_TAG_CHARS = 64
TrackerName = Annotated[str, Field(min_length=1, max_length=128)]
Tag = Annotated[str, Field(min_length=1, max_length=MAX_TAG_CHARS)]


class WandbOptions(_Strict):
    """OpenAI's W&B integration. The API key comes from the worker's environment (WANDB_API_KEY),
    never from the request; WANDB_MODE=offline keeps the run on the worker's disk."""

    project: TrackerName
    name: TrackerName | None = None
    """The run's display name; default: the job's id (also the run's id, so a resumed job continues it)."""
    entity: TrackerName | None = None
    tags: Annotated[list[Tag], at_most_items(MAX_TRACKER_TAGS), Field(max_length=MAX_TRACKER_TAGS)] = []


class WandbIntegration(_Strict):
    type: Literal["wandb"]
    wandb: WandbOptions


class TensorboardOptions(_Strict):
    """lmtune: event files in the run folder's `tensorboard/` (`tensorboard --logdir <data>/jobs`)."""


class TensorboardIntegration(_Strict):
    type: Literal["tensorboard"]
    tensorboard: TensorboardOptions = TensorboardOptions()


class MlflowOptions(_Strict):
    """lmtune: a run in this experiment, on the worker's MLFLOW_TRACKING_URI (default: a SQLite store
    in the run folder's `mlflow.db`); credentials from the worker's environment."""

    experiment: TrackerName
    run_name: TrackerName | None = None
    tags: Annotated[dict[Tag, Annotated[str, Field(max_length=500)]], at_most_items(MAX_TRACKER_TAGS)] = {}


class MlflowIntegration(_Strict):
    type: Literal["mlflow"]
    mlflow: MlflowOptions


Integration = Annotated[WandbIntegration | TensorboardIntegration | MlflowIntegration, Field(discriminator="type")]
MAX_INTEGRATIONS = 3


class JobSpec(_Strict):
    model: str = Field(min_length=1, max_length=MAX_PATH_CHARS)
    """A hub id or a local folder (the API maps catalogue names to these)."""
    training_file: str = Field(min_length=1, max_length=MAX_PATH_CHARS)
    validation_file: str | None = Field(None, min_length=1, max_length=MAX_PATH_CHARS)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    method: Method = SupervisedMethod()
    """OpenAI's method object (lmtune/methods.py); OpenAI's deprecated top-level `hyperparameters`
    are still taken, and folded into it."""
    training: TrainingOptions = TrainingOptions()
    integrations: Annotated[list[Integration], at_most_items(MAX_INTEGRATIONS), Field(max_length=MAX_INTEGRATIONS)] = []
    """Experiment trackers the trainer reports to; one that fails never fails the job (a notice says why)."""

    @model_validator(mode="before")
    @classmethod
    def _deprecated_hyperparameters(cls, data: Any) -> Any:
        if isinstance(data, dict) and "hyperparameters" in data:
            data = dict(data)
            method = fold_hyperparameters(data.pop("method", None), data.pop("hyperparameters"))
            data |= {"method": method} if method is not None else {}
        return data

    @property
    def hyperparameters(self) -> Hyperparameters:
        return self.method.hyperparameters

    @model_validator(mode="after")
    def _validation_file_for_validation_loss(self) -> JobSpec:
        for name in ("early_stopping", "keep_best"):
            if getattr(self.training, name) and not self.validation_file:
                raise ValueError(f"training.{name} watches the validation loss: give a validation_file")
        if self.training.eval_id and not self.validation_file:
            raise ValueError("training.eval_id scores answers to the validation rows: give a validation_file")
        for name in self.training.followed_scores():
            if not self.training.eval_id:
                raise ValueError(f"{name} follows an eval's score: name the eval in training.eval_id")
        if isinstance(self.method, ReinforcementMethod):
            if not self.validation_file:
                raise ValueError(
                    "method reinforcement needs a validation_file: its rows are answered and graded every eval_interval steps"
                )
        elif self.training.grpo is not None:
            raise ValueError('training.grpo: only for method {"type": "reinforcement"}')
        self._check_parallelism()
        kinds = [integration.type for integration in self.integrations]
        if len(kinds) != len(set(kinds)):
            raise ValueError("integrations: give each type at most once")
        return self

    def _check_parallelism(self) -> None:
        """What a sharded model cannot do yet: generate answers (each process's answers end at a
        different length, while every forward pass of a sharded model is a collective), load the
        best checkpoint back, or hold a 4-bit base."""
        training = self.training
        if training.parallelism != "fsdp":
            return
        refused = {
            "method reinforcement (it generates answers as it trains)": isinstance(self.method, ReinforcementMethod),
            "training.keep_best (it loads the best checkpoint back)": bool(training.keep_best),
            "training.eval_id (it generates answers)": bool(training.eval_id),
            "training.lora.quantize (a 4-bit base)": bool(training.lora and training.lora.quantize),
        }
        for what, asked in refused.items():
            if asked:
                raise ValueError(f'training.parallelism "fsdp" cannot train with {what}; use "ddp"')


class ResolvedHyperparameters(_Strict):
    """The values a run actually uses, after every "auto" is decided."""

    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float
    learning_rate: float
    micro_batch_size: int
    total_steps: int
    beta: float | None = None
    """DPO's beta ("auto" decided); None for other methods."""


def describe_validation_error(error: ValidationError) -> str:
    return describe_errors(error.errors())


def describe_errors(errors: list[dict]) -> str:
    """One line per bad field, `hyperparameters.n_epochs: must be ... got 0`: the first few, then
    how many more."""
    lines = []
    for item in errors:
        where = error_location(item)
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field; remove it or check its spelling"
        lines.append(f"{where or 'spec'}: {message[:MESSAGE_CHARS]}")
    return summarize(list(dict.fromkeys(lines)))


def error_location(item: dict) -> str:
    """The field path a user wrote, without pydantic's union branches or FastAPI's `body`/`query`."""
    parts = [
        str(part)[:LOCATION_PART_CHARS]
        for part in item["loc"]
        if not _is_union_branch(part) and part not in ("body", "query", "path", "header")
    ]
    # a tagged union (integrations) names the tag it chose, then the field of that name: say it once
    return ".".join(part for i, part in enumerate(parts) if i == 0 or part != parts[i - 1])


def _is_union_branch(part: Any) -> bool:
    # pydantic names the union member it tried (`int`, `literal['auto']`); users never wrote those
    return isinstance(part, str) and (
        part in {"int", "float", "str", "constrained-str"} or part.startswith(("literal[", "function-", "list["))
    )


def parse_spec(data: Any) -> JobSpec:
    try:
        return JobSpec.model_validate(data)
    except ValidationError as error:
        raise SpecError(describe_validation_error(error)) from None


def load_spec(path: str | Path) -> JobSpec:
    """Load a spec from YAML or JSON; relative file paths are taken relative to the spec's folder."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise SpecError(f"cannot read spec {path}: {error.strerror}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise SpecError(f"{path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {error}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: the spec must be a mapping of fields, got {type(data).__name__}")
    spec = parse_spec(data)
    return spec.model_copy(update=_paths_relative_to(spec, path.parent))


def _paths_relative_to(spec: JobSpec, folder: Path) -> dict[str, str]:
    update = {}
    for field in ("training_file", "validation_file"):
        value = getattr(spec, field)
        if value and not Path(value).is_absolute():
            update[field] = str((folder / value).resolve())
    # a model is a local folder only when that folder exists; otherwise it is a hub id
    if (folder / spec.model).is_dir() and not Path(spec.model).is_absolute():
        update["model"] = str((folder / spec.model).resolve())
    return update


def auto_epochs(n_examples: int) -> int:
    """OpenAI's rule of thumb: 3 epochs, more for tiny sets and fewer for huge ones."""
    if n_examples * AUTO_EPOCHS < AUTO_MIN_EXAMPLES_SEEN:
        return min(AUTO_MAX_EPOCHS, math.ceil(AUTO_MIN_EXAMPLES_SEEN / n_examples))
    if n_examples * AUTO_EPOCHS > AUTO_MAX_EXAMPLES_SEEN:
        return max(1, AUTO_MAX_EXAMPLES_SEEN // n_examples)
    return AUTO_EPOCHS


def auto_batch_size(n_examples: int, granularity: int) -> int:
    """About 0.2% of the examples, between 1 and 256, rounded up to a whole number of micro-batches."""
    size = min(MAX_BATCH_SIZE, max(1, math.ceil(n_examples * AUTO_BATCH_FRACTION)))
    return math.ceil(size / granularity) * granularity


def resolve_hyperparameters(spec: JobSpec, n_examples: int, world_size: int = 1) -> ResolvedHyperparameters:
    """Decide every "auto" for a dataset of `n_examples` trained on `world_size` processes."""
    training = spec.training
    slices = training.gradient_accumulation_steps * world_size
    hp = spec.hyperparameters
    n_epochs = auto_epochs(n_examples) if hp.n_epochs == "auto" else hp.n_epochs
    batch_size = auto_batch_size(n_examples, slices) if hp.batch_size == "auto" else hp.batch_size
    if batch_size % slices:
        raise SpecError(
            f"hyperparameters.batch_size: {batch_size} examples per step cannot be split evenly into "
            f"{training.gradient_accumulation_steps} accumulation steps x {world_size} processes; "
            f"use a multiple of {slices}"
        )
    multiplier = 1.0 if hp.learning_rate_multiplier == "auto" else hp.learning_rate_multiplier
    base = spec.method.base_learning_rate[training.lora is not None]
    learning_rate = training.learning_rate if training.learning_rate is not None else base * multiplier
    total_steps = math.ceil(n_examples / batch_size) * n_epochs
    if training.max_steps is not None:
        total_steps = min(total_steps, training.max_steps)
    return ResolvedHyperparameters(
        n_epochs=n_epochs,
        batch_size=batch_size,
        learning_rate_multiplier=multiplier,
        learning_rate=learning_rate,
        micro_batch_size=batch_size // slices,
        total_steps=total_steps,
        beta=spec.method.beta if isinstance(spec.method, DpoMethod) else None,
    )
