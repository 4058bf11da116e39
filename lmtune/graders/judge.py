"""Model graders (`score_model`, `label_model`): the judge is any model lmtune serves, reached through
the `Judge` the caller gives (the API: the model server; a worker: its own loaded models; the trainer:
its own), so this module needs no HTTP client and no torch.

OpenAI asks its judge for structured output `{"result": ..., "steps": [...]}`. A local model cannot be
held to a schema, so the prompt ends with a system message asking for that JSON, and the answer is
read leniently: the JSON's `result`, else (score) the first number or (label) the first label named.
An answer with neither is a `model_grader_parse_error` scoring 0, as OpenAI scores non-numeric output.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Protocol

DEFAULT_JUDGE_TOKENS = 256
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


@dataclass(frozen=True)
class JudgeCall:
    messages: list[dict]  # [{role, content}], templates rendered
    max_tokens: int = DEFAULT_JUDGE_TOKENS
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None


@dataclass
class JudgeAnswer:
    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None  # the judge could not answer this call (the model failed to load, ...)


class JudgeUnavailable(LookupError):
    """The judge model does not exist for this key (the message names it), or cannot be reached."""


class Judge(Protocol):
    def complete(self, model: str, calls: list[JudgeCall]) -> list[JudgeAnswer]:
        """One answer per call, in order; JudgeUnavailable if `model` is not this key's to use."""
        ...


def score_instruction(low: float, high: float) -> dict:
    return {
        "role": "system",
        "content": f'Reply with only a JSON object: {{"result": <a number from {low:g} to {high:g}>, "steps": '
        '[{"description": "...", "conclusion": "..."}]}',
    }


def label_instruction(labels: list[str]) -> dict:
    return {
        "role": "system",
        "content": f'Reply with only a JSON object: {{"result": <one of {json.dumps(labels)}>}}',
    }


def read_score(text: str) -> float | None:
    result = _json_result(text)
    if isinstance(result, int | float) and not isinstance(result, bool):
        return float(result)
    if isinstance(result, str) and _NUMBER.fullmatch(result.strip()):
        return float(result)
    match = _NUMBER.search(text)
    return float(match.group()) if match else None


def read_label(text: str, labels: list[str]) -> str | None:
    result = _json_result(text)
    if isinstance(result, str) and result.strip() in labels:
        return result.strip()
    lowered = text.lower()
    found = [(lowered.find(label.lower()), label) for label in labels if label.lower() in lowered]
    return min(found)[1] if found else None


def _json_result(text: str) -> object:
    match = _OBJECT.search(text)
    if match is None:
        return None
    try:
        value = json.loads(match.group())
    except ValueError:
        return None
    return value.get("result") if isinstance(value, dict) else None
