"""Validation of fine-tuning JSONL files, line by line, before any compute is spent.

Three row shapes are accepted (docs/api.md, "Training files"):
  chat:              {"messages": [{"role": ..., "content": ..., "weight": 0|1}, ...]}
  prompt/completion: {"prompt": "...", "completion": "..."}
  text:              {"text": "..."}
Every error names its line, so a user can fix the file in one pass.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal

ROLES = ("system", "user", "assistant")
MIN_EXAMPLES = 10
MAX_REPORTED_ERRORS = 20

Shape = Literal["chat", "prompt_completion", "text"]


class DatasetError(ValueError):
    """A training file that cannot be used; `errors` holds one `line N: ...` string per problem."""

    def __init__(self, errors: list[str], total: int | None = None):
        self.errors = errors
        shown = "\n".join(errors)
        more = (total or len(errors)) - len(errors)
        super().__init__(shown + (f"\n... and {more} more problems" if more > 0 else ""))


@dataclass(frozen=True)
class Row:
    line: int
    shape: Shape
    data: dict


def validate_jsonl_file(path: str | Path, min_examples: int = MIN_EXAMPLES) -> list[Row]:
    path = Path(path)
    try:
        with path.open("rb") as handle:
            return validate_jsonl_lines(handle, min_examples)
    except OSError as error:
        raise DatasetError([f"cannot read {path}: {error.strerror}"]) from None


def validate_jsonl_lines(lines: Iterable[bytes | str], min_examples: int = MIN_EXAMPLES) -> list[Row]:
    """Parse and check every line; raise DatasetError listing the problems, or return the rows."""
    rows: list[Row] = []
    errors: list[str] = []
    for number, raw in enumerate(lines, start=1):
        text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
        if not text.strip():
            continue  # blank lines (a trailing newline) are not examples
        try:
            rows.append(Row(number, *_check_row(text)))
        except ValueError as problem:
            errors.append(f"line {number}: {problem}")
    if errors:
        raise DatasetError(errors[:MAX_REPORTED_ERRORS], total=len(errors))
    if not rows:
        raise DatasetError(["the file is empty: it needs one JSON object per line"])
    if len(rows) < min_examples:
        raise DatasetError(
            [f"the file has {len(rows)} examples; at least {min_examples} are required"]
        )
    return rows


def _check_row(text: str) -> tuple[Shape, dict]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"invalid JSON ({error.msg} at column {error.colno})") from None
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    keys = set(data)
    if "messages" in keys:
        _check_messages(data["messages"])
        return "chat", data
    if keys == {"prompt", "completion"}:
        for key in ("prompt", "completion"):
            if not isinstance(data[key], str) or (key == "completion" and not data[key]):
                raise ValueError(f'"{key}" must be a non-empty string')
        return "prompt_completion", data
    if keys == {"text"}:
        if not isinstance(data["text"], str) or not data["text"]:
            raise ValueError('"text" must be a non-empty string')
        return "text", data
    raise ValueError(
        f"unknown row shape with keys {sorted(keys)}; expected "
        '{"messages": [...]}, {"prompt": ..., "completion": ...} or {"text": ...}'
    )


def _check_messages(messages: object) -> None:
    if not isinstance(messages, list) or not messages:
        raise ValueError('"messages" must be a non-empty list of {"role", "content"} objects')
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise ValueError(f"{where} must be an object with role and content")
        role = message.get("role")
        if role not in ROLES:
            raise ValueError(f"{where}: unknown role {role!r}; use one of {', '.join(ROLES)}")
        content = message.get("content")
        if not isinstance(content, str) or not content:
            raise ValueError(f"{where}: missing content (a non-empty string is required)")
        if "weight" in message:
            weight = message["weight"]
            if role != "assistant":
                raise ValueError(f"{where}: weight is only allowed on assistant messages")
            if isinstance(weight, bool) or weight not in (0, 1):
                raise ValueError(f"{where}: bad weight {weight!r}; use 0 (no loss) or 1 (train on it)")
        unknown = set(message) - {"role", "content", "weight", "name"}
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
    if not any(message["role"] == "assistant" for message in messages):
        raise ValueError("at least one message with the assistant role is required")
