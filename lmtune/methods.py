"""The training method of a job: OpenAI's `method` object, parsed in this one place.

`{"type": "supervised", "supervised": {"hyperparameters": {...}}}`, `{"type": "dpo", "dpo":
{"hyperparameters": {..., "beta": "auto" | number}}}` or `{"type": "reinforcement", "reinforcement":
{"grader": ..., "hyperparameters": {...}}}` (lmtune/reinforcement.py, docs/rft.md). Each method is a
class in METHODS, which says which training-row shapes it trains on (lmtune/training_data.py) and
what its "auto" learning rate is; a new method is one more class there. OpenAI's deprecated top-level `hyperparameters` is folded into the
method by `fold_hyperparameters` (JobSpec does it for every caller).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from lmtune.bounds import BatchSize, Epochs, LrMultiplier, auto_or_number
from lmtune.problems import quote, quote_names
from lmtune.reinforcement import ReinforcementHyperparameters, ReinforcementOptions
from lmtune.training_data import SHAPE_METHODS

AUTO_BETA = 0.1  # TRL's default and the DPO paper's usual value
MAX_BETA = 10.0


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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


class SupervisedOptions(_Strict):
    hyperparameters: Hyperparameters = Hyperparameters()


class DpoOptions(_Strict):
    hyperparameters: DpoHyperparameters = DpoHyperparameters()


def _shapes_of(method: str) -> frozenset[str]:
    return frozenset(shape for shape, trains in SHAPE_METHODS.items() if trains == method)


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
    shapes: ClassVar = _shapes_of("supervised")
    rows: ClassVar = 'chat ({"messages": ...}), prompt/completion or text rows'
    base_learning_rate: ClassVar = {True: 2e-4, False: 2e-5}
    hyperparameters_type: ClassVar = Hyperparameters
    type: Literal["supervised"] = "supervised"
    supervised: SupervisedOptions = SupervisedOptions()


class DpoMethod(_Method):
    shapes: ClassVar = _shapes_of("dpo")
    rows: ClassVar = 'preference rows ({"input": ..., "preferred_output": ..., "non_preferred_output": ...})'
    # DPO moves a model that is already good at the task: TRL's default full rate, and ten times it for LoRA
    base_learning_rate: ClassVar = {True: 1e-5, False: 1e-6}
    hyperparameters_type: ClassVar = DpoHyperparameters
    type: Literal["dpo"]
    dpo: DpoOptions = DpoOptions()

    @property
    def beta(self) -> float:
        beta = self.dpo.hyperparameters.beta
        return AUTO_BETA if beta == "auto" else beta


class ReinforcementMethod(_Method):
    """`{"type": "reinforcement", "reinforcement": {grader, hyperparameters}}` (docs/rft.md)."""

    shapes: ClassVar = _shapes_of("reinforcement")
    rows: ClassVar = 'prompt rows ({"messages": [...]} ending with the user\'s message, fields the grader reads)'
    # a policy-gradient step moves the model further than imitation: the rates TRL's GRPO starts from
    base_learning_rate: ClassVar = {True: 1e-5, False: 1e-6}
    hyperparameters_type: ClassVar = ReinforcementHyperparameters
    type: Literal["reinforcement"]
    reinforcement: ReinforcementOptions


METHODS: dict[str, type[_Method]] = {
    "supervised": SupervisedMethod,
    "dpo": DpoMethod,
    "reinforcement": ReinforcementMethod,
}
# each method's hyperparameter names, for method_echo: a page of jobs echoes twenty
_HYPERPARAMETER_NAMES = {kind: tuple(method.hyperparameters_type.model_fields) for kind, method in METHODS.items()}


def _known_type(value: Any) -> Any:
    if isinstance(value, dict):
        kind = value.get("type")
        if kind not in METHODS:
            raise ValueError(f"type must be one of {quote_names(list(METHODS))}, got {quote(kind)}")
    return value


Method = Annotated[
    SupervisedMethod | DpoMethod | ReinforcementMethod, Field(discriminator="type"), BeforeValidator(_known_type)
]


def method_for_shape(shape: str) -> str:
    """The method that trains on rows of this shape."""
    return SHAPE_METHODS[shape]


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
    body = method.get(kind) if isinstance(method.get(kind), dict) else {}
    given = body.get("hyperparameters")
    if given is not None and given != hyperparameters:
        raise ValueError(
            f"hyperparameters: give them once, in method.{kind}.hyperparameters "
            "(the top-level hyperparameters are OpenAI's deprecated form)"
        )
    return {**method, kind: {**body, "hyperparameters": hyperparameters}}


def method_echo(spec: dict, resolved: dict | None) -> dict:
    """The method object a job shows, as OpenAI's: each hyperparameter as given, or once the trainer
    has decided them, as resolved. `spec` is a stored spec (one stored before methods existed has
    top-level hyperparameters and is supervised); no validation, as a page of jobs shows many."""
    method = spec.get("method") or {"type": "supervised", "supervised": {"hyperparameters": spec["hyperparameters"]}}
    kind = method["type"]
    given = method.get(kind, {}).get("hyperparameters", {})
    resolved = resolved or {}
    shown = {name: resolved.get(name, given.get(name, "auto")) for name in _HYPERPARAMETER_NAMES[kind]}
    return {"type": kind, kind: {**method.get(kind, {}), "hyperparameters": shown}}  # with a grader, if any
