"""The training method of a job: OpenAI's `method` object, parsed in this one place.

`{"type": "supervised", "supervised": {"hyperparameters": {...}}}` or `{"type": "dpo", "dpo":
{"hyperparameters": {..., "beta": "auto" | number}}}`. Each method is a class in METHODS, which says
which training-row shapes it trains on (lmtune/training_data.py) and what its "auto" learning rate
is; a new method is one more class there. A type that OpenAI has but lmtune does not train yet is in
NOT_YET, refused with its reason. OpenAI's deprecated top-level `hyperparameters` is folded into the
method by `fold_hyperparameters` (JobSpec does it for every caller).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from lmtune.problems import quote, quote_names

MAX_BATCH_SIZE = 256
AUTO_BETA = 0.1  # TRL's default and the DPO paper's usual value
MAX_BETA = 10.0


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def auto_or_number(kind: type, low: float, high: float, *, low_exclusive: bool = False) -> Any:
    """The type of a field that takes "auto" or a number in a range: its message says so, and the
    OpenAPI schema shows the range."""
    bounds = f"{'above' if low_exclusive else 'from'} {low} {'up ' if low_exclusive else ''}to {high}"
    expected = f'"auto" or {"an integer" if kind is int else "a number"} {bounds}'

    def check(value: Any) -> Any:
        if value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"must be {expected}, got {quote(value)}")
        too_low = value <= low if low_exclusive else value < low
        if too_low or value > high or not math.isfinite(value) or (kind is int and value != int(value)):
            raise ValueError(f"must be {expected}, got {quote(value)}")
        return kind(value)

    number = Annotated[kind, Field(gt=low, le=high) if low_exclusive else Field(ge=low, le=high)]
    return Annotated[number | Literal["auto"], BeforeValidator(check)]


Epochs = auto_or_number(int, 1, 50)
BatchSize = auto_or_number(int, 1, MAX_BATCH_SIZE)
LrMultiplier = auto_or_number(float, 0, 10, low_exclusive=True)
Beta = auto_or_number(float, 0, MAX_BETA, low_exclusive=True)


class Hyperparameters(_Strict):
    """OpenAI's hyperparameters; each is "auto" or a value."""

    n_epochs: Epochs = "auto"
    batch_size: BatchSize = "auto"
    """Examples per optimizer step, over all micro-batches and processes (OpenAI's meaning)."""
    learning_rate_multiplier: LrMultiplier = "auto"


class DpoHyperparameters(Hyperparameters):
    beta: Beta = "auto"
    """How far the model may move from the reference (the starting model): higher keeps it closer.
    "auto" is AUTO_BETA. A batch counts preference pairs."""


class SupervisedSettings(_Strict):
    hyperparameters: Hyperparameters = Hyperparameters()


class DpoSettings(_Strict):
    hyperparameters: DpoHyperparameters = DpoHyperparameters()


class _Method(_Strict):
    shapes: ClassVar[frozenset[str]]  # the training-row shapes it trains on
    rows: ClassVar[str]  # those shapes, in words
    base_learning_rate: ClassVar[dict[bool, float]]  # LoRA or not -> the rate a multiplier of 1 gives
    hyperparameters_type: ClassVar[type[Hyperparameters]]
    type: str

    @property
    def hyperparameters(self) -> Hyperparameters:
        return getattr(self, self.type).hyperparameters


class SupervisedMethod(_Method):
    shapes: ClassVar = frozenset({"chat", "prompt_completion", "text"})
    rows: ClassVar = 'chat ({"messages": ...}), prompt/completion or text rows'
    base_learning_rate: ClassVar = {True: 2e-4, False: 2e-5}
    hyperparameters_type: ClassVar = Hyperparameters
    type: Literal["supervised"] = "supervised"
    supervised: SupervisedSettings = SupervisedSettings()


class DpoMethod(_Method):
    shapes: ClassVar = frozenset({"preference"})
    rows: ClassVar = 'preference rows ({"input": ..., "preferred_output": ..., "non_preferred_output": ...})'
    # DPO moves a model that is already good at the task: TRL's default full rate, and ten times it for LoRA
    base_learning_rate: ClassVar = {True: 1e-5, False: 1e-6}
    hyperparameters_type: ClassVar = DpoHyperparameters
    type: Literal["dpo"]
    dpo: DpoSettings = DpoSettings()

    @property
    def beta(self) -> float:
        beta = self.dpo.hyperparameters.beta
        return AUTO_BETA if beta == "auto" else beta


METHODS: dict[str, type[_Method]] = {"supervised": SupervisedMethod, "dpo": DpoMethod}
NOT_YET = {
    "reinforcement": "reinforcement fine-tuning is not available in lmtune yet; "
    'use "supervised" or "dpo" (preference rows)',
}


def _known_type(value: Any) -> Any:
    if isinstance(value, dict):
        kind = value.get("type")
        if kind in NOT_YET:
            raise ValueError(f"type {quote(kind)}: {NOT_YET[kind]}")
        if kind not in METHODS:
            raise ValueError(f"type must be one of {quote_names(list(METHODS))}, got {quote(kind)}")
    return value


Method = Annotated[SupervisedMethod | DpoMethod, Field(discriminator="type"), BeforeValidator(_known_type)]


def method_for_shape(shape: str) -> str:
    """The method that trains on rows of this shape."""
    return next(name for name, method in METHODS.items() if shape in method.shapes)


def fold_hyperparameters(method: Any, hyperparameters: Any) -> Any:
    """The method object with OpenAI's deprecated top-level `hyperparameters` in it (both as plain
    data): supervised when no method is given. Given in both places, they must agree."""
    if hyperparameters is None:
        return method
    method, hyperparameters = (
        v.model_dump(exclude_unset=True) if isinstance(v, BaseModel) else v for v in (method, hyperparameters)
    )
    if method is None:
        return {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}}
    if not isinstance(method, dict) or not isinstance(method.get("type"), str):
        return method  # the method's own validation says what is wrong
    kind = method["type"]
    settings = method.get(kind) if isinstance(method.get(kind), dict) else {}
    given = settings.get("hyperparameters")
    if given is not None and given != hyperparameters:
        raise ValueError(
            f"hyperparameters: give them once, in method.{kind}.hyperparameters "
            "(the top-level hyperparameters are OpenAI's deprecated form)"
        )
    return {**method, kind: {**settings, "hyperparameters": hyperparameters}}


def method_echo(spec: dict, resolved: dict | None) -> dict:
    """The method object a job shows, as OpenAI's: each hyperparameter as given, or once the trainer
    has decided them, as resolved. `spec` is a stored spec (one stored before methods existed has
    top-level hyperparameters and is supervised); no validation, as a page of jobs shows many."""
    method = spec.get("method") or {"type": "supervised", "supervised": {"hyperparameters": spec["hyperparameters"]}}
    kind = method["type"]
    given = method.get(kind, {}).get("hyperparameters", {})
    names = METHODS[kind].hyperparameters_type.model_fields
    shown = {name: (resolved or {}).get(name, given.get(name, "auto")) for name in names}
    return {"type": kind, kind: {"hyperparameters": shown}}
