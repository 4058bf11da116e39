"""Grading a batch: one grader over many (sample, item) pairs at once, as evaluations and
reinforcement fine-tuning need (one sandbox child for a batch of python calls, one judge call for a
batch of prompts, one embedding pass for cosine).

A pair's failure never fails the batch: it scores 0 with OpenAI's error flags set in its `errors`
(the `metadata.errors` of /v1/fine_tuning/alpha/graders/run). Only what makes every pair impossible
raises: python graders refused here (SandboxUnavailable), a judge model this key cannot use
(JudgeUnavailable), a metric this process cannot compute (MetricUnavailable).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from lmtune.graders import formula, judge, similarity, templates
from lmtune.graders.judge import Judge, JudgeCall
from lmtune.graders.sandbox import SandboxLimits, run_python
from lmtune.graders.schema import (
    LabelModelGrader,
    MultiGrader,
    PythonGrader,
    ScoreModelGrader,
    StringCheckGrader,
    TextSimilarityGrader,
    passes,
)
from lmtune.graders.similarity import Embedder

Pair = tuple[dict, dict]  # (sample namespace, item namespace)
ERROR_FLAGS = (
    "formula_parse_error",
    "invalid_variable_error",
    "model_grader_parse_error",
    "model_grader_refusal_error",
    "model_grader_server_error",
    "other_error",
    "python_grader_runtime_error",
    "python_grader_server_error",
    "sample_parse_error",
    "truncated_observation_error",
    "unresponsive_reward_error",
)


def no_errors() -> dict:
    return {
        **dict.fromkeys(ERROR_FLAGS, False),
        "model_grader_server_error_details": None,
        "python_grader_runtime_error_details": None,
        "python_grader_server_error_type": None,
    }


@dataclass
class Grade:
    """One pair's grade. `label` for label_model; `judge` is the judge's answer (model graders);
    `sub_scores` each sub-grader's score (multi)."""

    score: float = 0.0
    errors: dict = field(default_factory=no_errors)
    sub_scores: dict[str, float] = field(default_factory=dict)
    label: str | None = None
    judge: dict | None = None
    usage: dict[str, dict] = field(default_factory=dict)  # judge model -> token counts
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return any(self.errors[flag] for flag in ERROR_FLAGS)

    def flag(self, name: str, detail_key: str | None = None, detail: str | None = None) -> Grade:
        self.score = 0.0
        self.errors[name] = True
        if detail_key:
            self.errors[detail_key] = detail
        return self


@dataclass
class Tools:
    """What grading may use beyond itself: a judge for model graders, an embedding model for cosine,
    the python sandbox's limits."""

    judge: Judge | None = None
    embedder: Embedder | None = None
    sandbox: SandboxLimits = field(default_factory=SandboxLimits)


def sample_namespace(output_text: str, output_tools: list | None = None, choices: list | None = None) -> dict:
    """OpenAI's `sample`: the output text, its JSON when it is JSON, the tool calls, the choices."""
    try:
        output_json = json.loads(output_text)
    except ValueError:
        output_json = None
    return {
        "output_text": output_text,
        "output_json": output_json if isinstance(output_json, dict | list) else None,
        "output_tools": output_tools or [],
        "choices": choices or [],
    }


def grade_batch(grader, pairs: Sequence[Pair], tools: Tools) -> list[Grade]:
    started = time.monotonic()
    if isinstance(grader, MultiGrader):
        grades = _multi(grader, pairs, tools)
    elif isinstance(grader, PythonGrader):
        grades = _python(grader, pairs, tools)
    elif isinstance(grader, ScoreModelGrader | LabelModelGrader):
        grades = _model(grader, pairs, tools)
    else:
        grades = _text(grader, pairs, tools)
    spent = (time.monotonic() - started) / max(len(pairs), 1)
    for grade in grades:
        grade.seconds = grade.seconds or spent
    return grades


def _namespaces(pair: Pair) -> dict:
    return {"sample": pair[0], "item": pair[1]}


def _text(grader: StringCheckGrader | TextSimilarityGrader, pairs: Sequence[Pair], tools: Tools) -> list[Grade]:
    grades, rendered = [Grade() for _ in pairs], {}
    for index, pair in enumerate(pairs):
        try:
            rendered[index] = (
                templates.render(grader.input, _namespaces(pair)),
                templates.render(grader.reference, _namespaces(pair)),
            )
        except templates.VariableError as error:
            grades[index].flag("invalid_variable_error", "invalid_variable_error_details", str(error))
    if isinstance(grader, StringCheckGrader):
        for index, (text, reference) in rendered.items():
            grades[index].score = float(_string_check(grader.operation, text, reference))
        return grades
    values = similarity.scores(grader.evaluation_metric, list(rendered.values()), tools.embedder)
    for index, value in zip(rendered, values):
        grades[index].score = value
    return grades


def _string_check(operation: str, text: str, reference: str) -> bool:
    if operation == "eq":
        return text == reference
    if operation == "ne":
        return text != reference
    if operation == "like":
        return reference in text
    return reference.lower() in text.lower()  # ilike


def _python(grader: PythonGrader, pairs: Sequence[Pair], tools: Tools) -> list[Grade]:
    grades = []
    for outcome in run_python(grader.source, list(pairs), tools.sandbox):
        grade = Grade(seconds=outcome.seconds)
        if outcome.runtime_error is not None:
            grade.flag("python_grader_runtime_error", "python_grader_runtime_error_details", outcome.runtime_error)
        elif outcome.server_error is not None:
            grade.flag("python_grader_server_error", "python_grader_server_error_type", outcome.server_error)
            grade.errors["python_grader_runtime_error_details"] = outcome.details
        else:
            grade.score = outcome.score
        grades.append(grade)
    return grades


def _model(grader: ScoreModelGrader | LabelModelGrader, pairs: Sequence[Pair], tools: Tools) -> list[Grade]:
    if tools.judge is None:
        raise judge.JudgeUnavailable(f"{grader.type} graders need a judge model, which this process cannot run")
    sampling = getattr(grader, "sampling_params", None)
    instruction = (
        judge.score_instruction(*grader.bounds)
        if isinstance(grader, ScoreModelGrader)
        else judge.label_instruction(grader.labels)
    )
    grades, calls = [Grade() for _ in pairs], {}
    for index, pair in enumerate(pairs):
        try:
            messages = [
                {"role": m.role, "content": templates.render(m.text(), _namespaces(pair))} for m in grader.input
            ]
        except templates.VariableError as error:
            grades[index].flag("invalid_variable_error", "invalid_variable_error_details", str(error))
            continue
        calls[index] = JudgeCall(
            messages=[*messages, instruction],
            max_tokens=(sampling and sampling.max_completions_tokens) or judge.DEFAULT_JUDGE_TOKENS,
            temperature=(sampling.temperature if sampling and sampling.temperature is not None else 0.0),
            top_p=(sampling and sampling.top_p) or 1.0,
            seed=sampling and sampling.seed,
        )
    answers = tools.judge.complete(grader.model, list(calls.values())) if calls else []
    for index, answer in zip(calls, answers):
        grade = grades[index]
        grade.judge = {"model": grader.model, "output": answer.text}
        grade.usage = {
            grader.model: {
                "prompt_tokens": answer.prompt_tokens,
                "completion_tokens": answer.completion_tokens,
                "total_tokens": answer.prompt_tokens + answer.completion_tokens,
            }
        }
        if answer.error is not None:
            grade.flag("model_grader_server_error", "model_grader_server_error_details", answer.error)
        elif isinstance(grader, ScoreModelGrader):
            value = judge.read_score(answer.text)
            if value is None:
                grade.flag("model_grader_parse_error")
            else:
                low, high = grader.bounds
                grade.score = min(max(value, low), high)
        else:
            grade.label = judge.read_label(answer.text, grader.labels)
            if grade.label is None:
                grade.flag("model_grader_parse_error")
            else:
                grade.score = 1.0 if grade.label in grader.passing_labels else 0.0
    return grades


def _multi(grader: MultiGrader, pairs: Sequence[Pair], tools: Tools) -> list[Grade]:
    tree = formula.parse_formula(grader.calculate_output, set(grader.graders))
    parts = {name: grade_batch(sub, pairs, tools) for name, sub in grader.graders.items()}
    grades = []
    for index in range(len(pairs)):
        grade = Grade(sub_scores={name: parts[name][index].score for name in parts})
        for sub in parts.values():
            for flag, value in sub[index].errors.items():
                if value and not grade.errors.get(flag):
                    grade.errors[flag] = value
            for model, usage in sub[index].usage.items():
                total = grade.usage.setdefault(model, dict.fromkeys(usage, 0))
                for key, count in usage.items():
                    total[key] += count
        try:
            value = formula.evaluate(tree, grade.sub_scores)
        except formula.FormulaError as error:
            grade.flag("formula_parse_error", "formula_error_details", str(error))
        else:
            grade.score = 0.0 if grade.failed else value
        grades.append(grade)
    return grades


def criteria_results(criteria: list, pairs: list[tuple[dict, dict]], tools: Tools) -> list[list[dict]]:
    """For each (sample, item) pair, each criterion's result as an output item shows it (name, type,
    score, passed, the judge's answer, errors), with the judges' token `usage`: an eval run's output
    items (workers/eval_runner.py) and training's scores at each evaluation (training.eval_id)."""
    grades = [grade_batch(criterion, pairs, tools) for criterion in criteria]
    return [
        [
            {
                "name": criterion.name,
                "type": criterion.type,
                "score": grade.score,
                "passed": not grade.failed
                and passes(criterion, grade.score, grade.label is not None and grade.score >= 1),
                "sample": grade.judge,
                "errors_found": grade.failed,
                "errors": {k: v for k, v in grade.errors.items() if v} or None,
                "label": grade.label,
                "usage": grade.usage,
            }
            for criterion, grade in zip(criteria, (per_criterion[position] for per_criterion in grades))
        ]
        for position in range(len(pairs))
    ]
