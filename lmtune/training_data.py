"""Validation of fine-tuning JSONL files, line by line, before any compute is spent.

Three row shapes are accepted (docs/api.md, "Training files"):
  chat:              {"messages": [{"role": ..., "content": ..., "weight": 0|1}, ...]}, with OpenAI's
                     tool calling: "tools", "parallel_tool_calls", assistant "tool_calls", "tool"
                     messages, and the legacy "functions" form (checked by lmtune/tool_calls.py)
  prompt/completion: {"prompt": "...", "completion": "..."}
  text:              {"text": "..."}
Every error names its line, so a user can fix the file in one pass. A file is read as a stream, one
line (at most MAX_LINE_BYTES) at a time: checking a file of any size holds one line in memory.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from lmtune.problems import quote_names, summarize
from lmtune.tool_calls import check_conversation

MIN_EXAMPLES = 10
MAX_LINE_BYTES = 4 * 1024 * 1024  # about a million tokens: far more than any max_seq_length
MAX_STORED_PROBLEMS = 5

Shape = Literal["chat", "prompt_completion", "text", "prompt"]  # prompt: reinforcement (lmtune/reinforcement.py)
RowCheck = Callable[[object], tuple[Shape, dict]]


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


def count_examples(path: str | Path, min_examples: int = MIN_EXAMPLES, check_row: RowCheck | None = None) -> int:
    """Check a whole file, streaming it; return how many examples it has. Memory: one line."""
    return sum(1 for _ in iter_rows(path, min_examples, check_row))


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
    for number, raw in enumerate(lines, start=1):
        try:
            checked = _check_line(raw, check_row or check_supervised_row)
        except ValueError as problem:
            total_errors += 1
            if len(errors) < MAX_STORED_PROBLEMS:
                errors.append(f"line {number}: {problem}")
            continue
        if checked is not None:
            examples += 1
            yield Row(number, *checked)
    if total_errors:
        raise DatasetError(errors, total=total_errors)
    if not examples:
        raise DatasetError(["the file is empty: it needs one JSON object per line"])
    if examples < min_examples:
        raise DatasetError([f"the file has {examples} examples; at least {min_examples} are required"])


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
        '{"messages": [...]}, {"prompt": ..., "completion": ...} or {"text": ...}'
    )


def _check_text(text: str, where: str) -> None:
    if "\x00" in text:
        raise ValueError(f"{where} contains a NUL character (\\u0000)")
