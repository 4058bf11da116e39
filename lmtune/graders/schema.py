"""Graders as OpenAI defines them (the `openai` SDK's types/graders): one pydantic model per type, a
union discriminated by `type`, and the testing criteria of an eval (a grader with `pass_threshold`).

The same models are the body of /v1/fine_tuning/alpha/graders/run and /validate, an eval's stored
`testing_criteria`, and what reinforcement fine-tuning rewards with. Unknown keys are refused, and
every bound is checked here so that a stored grader always runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lmtune.bounds import at_most_items

MAX_TEMPLATE_CHARS = 100_000
MAX_PYTHON_SOURCE_BYTES = 256 * 1024  # OpenAI's limit on a python grader's source
MAX_MESSAGES = 64
MAX_LABELS = 64
MAX_SUB_GRADERS = 16
MAX_FORMULA_CHARS = 1000
MAX_NAME_CHARS = 256
MAX_JUDGE_TOKENS = 4096

TEXT_METRICS = (
    "cosine",
    "fuzzy_match",
    "bleu",
    "gleu",
    "meteor",
    "rouge_1",
    "rouge_2",
    "rouge_3",
    "rouge_4",
    "rouge_5",
    "rouge_l",
)

Template = Annotated[str, Field(max_length=MAX_TEMPLATE_CHARS)]
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME_CHARS)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StringCheckGrader(_Strict):
    type: Literal["string_check"]
    name: Name
    input: Template
    reference: Template
    operation: Literal["eq", "ne", "like", "ilike"] = Field(
        description="eq: equal; ne: not equal; like: input contains reference; ilike: the same ignoring case"
    )


class TextSimilarityGrader(_Strict):
    type: Literal["text_similarity"]
    name: Name
    input: Template
    reference: Template
    evaluation_metric: Literal[TEXT_METRICS]  # type: ignore[valid-type]
    pass_threshold: float | None = Field(None, description="a score at or above it passes (OpenAI's guide shows it)")


class PythonGrader(_Strict):
    type: Literal["python"]
    name: Name
    source: str = Field(description="Python source defining `grade(sample, item) -> float`; at most 256 kB")
    image_tag: str | None = Field(
        None, max_length=64, description="accepted for OpenAI's clients; lmtune has one image"
    )

    @field_validator("source")
    @classmethod
    def _bounded(cls, source: str) -> str:
        if len(source.encode()) > MAX_PYTHON_SOURCE_BYTES:
            raise ValueError(
                f"must be at most {MAX_PYTHON_SOURCE_BYTES // 1024} kB, got {len(source.encode()):,} bytes"
            )
        return source


class ContentPart(_Strict):
    type: Literal["input_text", "output_text"]
    text: Template


class JudgeMessage(BaseModel):
    """One message of a model grader's prompt (`type: message` as OpenAI's EvalItem, or a plain
    {role, content}); text only: images and audio are refused."""

    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant"]
    content: Template | Annotated[list[ContentPart], Field(max_length=MAX_MESSAGES)] | ContentPart
    type: Literal["message"] | None = None

    def text(self) -> str:
        parts = self.content if isinstance(self.content, list) else [self.content]
        return "".join(part if isinstance(part, str) else part.text for part in parts)


class JudgeSampling(_Strict):
    """OpenAI's `sampling_params` of a model grader; `reasoning_effort` is accepted and ignored (no
    lmtune model reasons)."""

    max_completions_tokens: int | None = Field(None, ge=1, le=MAX_JUDGE_TOKENS)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    reasoning_effort: str | None = Field(None, max_length=16)


JudgeInput = Annotated[list[JudgeMessage], Field(min_length=1), at_most_items(MAX_MESSAGES)]


class ScoreModelGrader(_Strict):
    type: Literal["score_model"]
    name: Name
    model: str = Field(
        min_length=1, max_length=512, description="any model this key may use: catalogue, ft:…, checkpoint"
    )
    input: JudgeInput
    range: Annotated[list[float], Field(min_length=2, max_length=2)] | None = Field(
        None, description="[low, high]; the score is clamped to it (default [0, 1])"
    )
    sampling_params: JudgeSampling | None = None
    pass_threshold: float | None = Field(None, description="a score at or above it passes (default: mid-range)")

    @field_validator("range")
    @classmethod
    def _ordered(cls, bounds: list[float] | None) -> list[float] | None:
        if bounds is not None and not bounds[0] < bounds[1]:
            raise ValueError(f"must be [low, high] with low < high, got {bounds}")
        return bounds

    @property
    def bounds(self) -> tuple[float, float]:
        return tuple(self.range) if self.range else (0.0, 1.0)


class LabelModelGrader(_Strict):
    type: Literal["label_model"]
    name: Name
    model: str = Field(min_length=1, max_length=512)
    input: JudgeInput
    labels: Annotated[list[Annotated[str, Field(min_length=1, max_length=256)]], Field(min_length=1)] = Field(
        description="the labels the judge chooses from"
    )
    passing_labels: Annotated[list[str], Field(min_length=1)]

    @field_validator("labels")
    @classmethod
    def _few_labels(cls, labels: list[str]) -> list[str]:
        if len(labels) > MAX_LABELS:
            raise ValueError(f"at most {MAX_LABELS} labels are allowed, got {len(labels)}")
        return labels

    @model_validator(mode="after")
    def _passing_among_labels(self) -> LabelModelGrader:
        unknown = [label for label in self.passing_labels if label not in self.labels]
        if unknown:
            raise ValueError(f"passing_labels must be among labels; {unknown[:3]} are not")
        return self


SimpleGrader = Annotated[
    StringCheckGrader | TextSimilarityGrader | PythonGrader | ScoreModelGrader | LabelModelGrader,
    Field(discriminator="type"),
]


class MultiGrader(_Strict):
    """Sub-graders by name (OpenAI's guide), combined by `calculate_output`, a formula over those names.
    The SDK types `graders` as one grader; that form is taken too, under its own name."""

    type: Literal["multi"]
    name: Name
    graders: Annotated[dict[str, SimpleGrader], at_most_items(MAX_SUB_GRADERS)] | SimpleGrader
    calculate_output: str = Field(min_length=1, max_length=MAX_FORMULA_CHARS)

    @field_validator("graders")
    @classmethod
    def _named(cls, graders):
        graders = graders if isinstance(graders, dict) else {graders.name: graders}
        if not graders:
            raise ValueError("give at least one grader")
        for key in graders:
            if not key.isidentifier():
                raise ValueError(f"grader keys are the formula's variables: {key!r} is not a valid name")
        return graders

    @model_validator(mode="after")
    def _formula_parses(self) -> MultiGrader:
        from lmtune.graders.formula import parse_formula  # the formula module needs no schema: no cycle

        parse_formula(self.calculate_output, set(self.graders))
        return self


Grader = Annotated[
    StringCheckGrader | TextSimilarityGrader | PythonGrader | ScoreModelGrader | LabelModelGrader | MultiGrader,
    Field(discriminator="type"),
]
ModelGrader = ScoreModelGrader | LabelModelGrader


class StringCheckCriterion(StringCheckGrader):
    pass


class TextSimilarityCriterion(TextSimilarityGrader):
    pass_threshold: float = Field(description="a score at or above it passes")


class PythonCriterion(PythonGrader):
    pass


class ScoreModelCriterion(ScoreModelGrader):
    pass


class LabelModelCriterion(LabelModelGrader):
    pass


TestingCriterion = Annotated[
    StringCheckCriterion | TextSimilarityCriterion | PythonCriterion | ScoreModelCriterion | LabelModelCriterion,
    Field(discriminator="type"),
]


def passes(criterion, score: float, passed_label: bool | None = None) -> bool:
    """Whether a score passes a testing criterion: string_check at 1; label_model on its passing
    labels; the others at `pass_threshold` (by default the middle of the range, as 0.5 of [0, 1])."""
    if isinstance(criterion, LabelModelGrader):
        return bool(passed_label)
    if isinstance(criterion, StringCheckGrader):
        return score >= 1
    threshold = getattr(criterion, "pass_threshold", None)
    if threshold is None:
        low, high = criterion.bounds if isinstance(criterion, ScoreModelGrader) else (0.0, 1.0)
        threshold = (low + high) / 2
    return score >= threshold


def judged_by(grader) -> dict[str, str]:
    """The judge model of each model grader in `grader` (a multi grader's too), by the field that
    names it relative to the grader: {"model": m} or {"graders.<name>.model": m}."""
    if isinstance(grader, MultiGrader):
        return {
            f"graders.{key}.{field}": model
            for key, sub in grader.graders.items()
            for field, model in judged_by(sub).items()
        }
    return {"model": grader.model} if isinstance(grader, ScoreModelGrader | LabelModelGrader) else {}


def with_judges(grader, source: Callable[[str], str]):
    """The grader with each judge model replaced by `source(model)`: what a trainer loads."""
    if isinstance(grader, MultiGrader):
        return grader.model_copy(update={"graders": {k: with_judges(sub, source) for k, sub in grader.graders.items()}})
    if isinstance(grader, ScoreModelGrader | LabelModelGrader):
        return grader.model_copy(update={"model": source(grader.model)})
    return grader
