"""Validation of fine-tuning JSONL files, line by line, before any compute is spent.

Five row shapes are accepted (docs/api.md, "Training files"); the first three train with the
supervised method, preference rows with DPO, prompt rows with reinforcement (lmtune/methods.py,
lmtune/reinforcement.py), and a file holds the rows of one method:
  chat:              {"messages": [{"role": ..., "content": ..., "weight": 0|1}, ...]}, with OpenAI's
                     tool calling: "tools", "parallel_tool_calls", assistant "tool_calls", "tool"
                     messages, and the legacy "functions" form (checked by lmtune/tool_calls.py)
  prompt/completion: {"prompt": "...", "completion": "..."}
  text:              {"text": "..."}
  preference:        {"input": {"messages": [...]}, "preferred_output": [...], "non_preferred_output": [...]}
                     (checked by lmtune/preference_rows.py)
  prompt:            {"messages": [..., {"role": "user", ...}], ...fields the grader reads}
Every error names its line, so a user can fix the file in one pass. A file is read as a stream, one
line (at most MAX_LINE_BYTES) at a time: checking a file of any size holds one line in memory.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

from lmtune.preference_rows import check_preference_row, is_preference_row
from lmtune.problems import quote_names, summarize
from lmtune.tool_calls import check_conversation

MIN_EXAMPLES = 10
MAX_LINE_BYTES = 4 * 1024 * 1024  # about a million tokens: far more than any max_seq_length
MAX_STORED_PROBLEMS = 5

Shape = Literal["chat", "prompt_completion", "text", "preference", "prompt"]  # prompt: reinforcement
RowCheck = Callable[[object], tuple[Shape, dict]]
SHAPE_NAMES = {
    "chat": "a chat",
    "prompt_completion": "a prompt/completion",
    "text": "a text",
    "preference": "a preference",
    "prompt": "a prompt (the user's message last)",
}
SHAPE_METHODS = {  # the method (lmtune/methods.py) that trains on each shape
    "chat": "supervised",
    "prompt_completion": "supervised",
    "text": "supervised",
    "preference": "dpo",
    "prompt": "reinforcement",
}


class DatasetError(ValueError):
    """A training file that cannot be used; `errors` holds the first `line N: ...` problems and
    `total` how many there are in all."""

    def __init__(self, errors: list[str], total: int | None = None):
        self.errors = errors
        self.total = len(errors) if total is None else total
        super().__init__(summarize(errors, self.total))


@dataclass(frozen=True)
class Row:
    line: int
    shape: Shape
    data: dict


class _Overlong:
    """Stands for a line longer than MAX_LINE_BYTES, which is skipped unread."""


OVERLONG = _Overlong()


@dataclass
class FileRows:
    """What a checked file holds: how many examples, and the first line of each row shape in it."""

    examples: int = 0
    shapes: dict[str, int] = field(default_factory=dict)


def scan_file(path: str | Path, min_examples: int = MIN_EXAMPLES, check_row: RowCheck | None = None) -> FileRows:
    """Check a whole file, streaming it. Memory: one line."""
    found = FileRows()
    for row in iter_rows(path, min_examples, check_row):
        found.examples += 1
        found.shapes.setdefault(row.shape, row.line)
    return found


def validate_jsonl_file(path: str | Path, min_examples: int = MIN_EXAMPLES) -> list[Row]:
    """Every example of the file; DatasetError listing the problems if any line is bad."""
    return list(iter_rows(path, min_examples))


def validate_jsonl_lines(lines: Iterable[bytes | str], min_examples: int = MIN_EXAMPLES) -> list[Row]:
    return list(check_lines(lines, min_examples))


def iter_rows(path: str | Path, min_examples: int = MIN_EXAMPLES, check_row: RowCheck | None = None) -> Iterator[Row]:
    """The file's examples as they are read; DatasetError when the file ends, if any line was bad."""
    try:
        with Path(path).open("rb") as handle:
            yield from check_lines(bounded_lines(handle), min_examples, check_row)
    except OSError as error:
        raise DatasetError([f"cannot read the file: {error.strerror}"]) from None


def bounded_lines(handle: BinaryIO) -> Iterator[bytes | _Overlong]:
    """The lines of a binary file, none longer than MAX_LINE_BYTES: a longer one is OVERLONG."""
    while line := handle.readline(MAX_LINE_BYTES + 1):
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            while (rest := handle.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                pass  # the rest of the overlong line, read and dropped a slice at a time
            yield OVERLONG
        else:
            yield line


def check_lines(
    lines: Iterable[bytes | str | _Overlong], min_examples: int = MIN_EXAMPLES, check_row: RowCheck | None = None
) -> Iterator[Row]:
    """Yield each valid row (supervised training's shapes, or those `check_row` accepts); at the end,
    raise DatasetError naming the bad lines (the first few, and how many in all), or if there are too
    few examples."""
    errors: list[str] = []
    total_errors = examples = 0
    first: Row | None = None  # the first row: the others are of its method
    for number, raw in enumerate(lines, start=1):
        try:
            checked = _check_line(raw, check_row or check_supervised_row)
            if checked is not None and first is not None:
                _same_method(first, checked[0])
        except ValueError as problem:
            total_errors += 1
            if len(errors) < MAX_STORED_PROBLEMS:
                errors.append(f"line {number}: {problem}")
            continue
        if checked is not None:
            examples += 1
            row = Row(number, *checked)
            first = first or row
            yield row
    if total_errors:
        raise DatasetError(errors, total=total_errors)
    if not examples:
        raise DatasetError(["the file is empty: it needs one JSON object per line"])
    if examples < min_examples:
        raise DatasetError([f"the file has {examples} examples; at least {min_examples} are required"])


def _same_method(first: Row, shape: Shape) -> None:
    method, first_method = SHAPE_METHODS[shape], SHAPE_METHODS[first.shape]
    if method != first_method:
        raise ValueError(
            f"{SHAPE_NAMES[shape]} row, which trains with method {method!r}, but line {first.line} is "
            f"{SHAPE_NAMES[first.shape]} row (method {first_method!r}); a file holds the rows of one method"
        )


def _check_line(raw: bytes | str | _Overlong, check_row: RowCheck) -> tuple[Shape, dict] | None:
    if raw is OVERLONG:
        raise ValueError(f"the line is longer than {MAX_LINE_BYTES:,} bytes")
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(f"not UTF-8 text (bad byte at position {error.start + 1} of the line)") from None
    if "\x00" in raw:
        raise ValueError("contains a NUL character; the file must be UTF-8 text")
    if not raw.strip():
        return None  # blank lines (a trailing newline) are not examples
    return check_row(_parse(raw))


def _parse(text: str) -> object:
    line = text.rstrip("\r\n")  # a position past the line's end is its end, not column 1 of the next
    try:
        return json.loads(line)
    except json.JSONDecodeError as error:
        where = f"column {error.colno}" + (", the end of the line: is it cut short?" if error.pos >= len(line) else "")
        raise ValueError(f"invalid JSON ({error.msg} at {where})") from None
    except RecursionError:
        raise ValueError("invalid JSON: nested too deeply") from None
    except ValueError:  # a number too long to convert
        raise ValueError("invalid JSON: a number has too many digits") from None


def check_supervised_row(data: object) -> tuple[Shape, dict]:
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    keys = set(data)
    if is_preference_row(data):
        check_preference_row(data)
        return "preference", data
    if "messages" in keys:
        check_conversation(data["messages"], data.get("tools"), data.get("functions"), data.get("parallel_tool_calls"))
        return "chat", data
    if keys == {"prompt", "completion"}:
        for key in ("prompt", "completion"):
            if not isinstance(data[key], str) or (key == "completion" and not data[key]):
                raise ValueError(f'"{key}" must be a non-empty string')
            _check_text(data[key], key)
        return "prompt_completion", data
    if keys == {"text"}:
        if not isinstance(data["text"], str) or not data["text"]:
            raise ValueError('"text" must be a non-empty string')
        _check_text(data["text"], "text")
        return "text", data
    raise ValueError(
        f"unknown row shape with keys {quote_names(sorted(keys))}; expected "
        '{"messages": [...]}, {"prompt": ..., "completion": ...}, {"text": ...} or a preference row '
        '{"input": ..., "preferred_output": ..., "non_preferred_output": ...}'
    )


def _check_text(text: str, where: str) -> None:
    if "\x00" in text:
        raise ValueError(f"{where} contains a NUL character (\\u0000)")
