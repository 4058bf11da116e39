"""Error text that stays short whatever the input: values cut to a prefix, lists cut to a few items."""

from __future__ import annotations

from collections.abc import Iterable

QUOTE_CHARS = 40
# The longest id a request can name (a model: a checkpoint of a fine-tuned model of a fine-tuned
# model nests ids); an id is quoted whole up to it, so the part to fix is never cut off.
ID_CHARS = 512
SHOWN_PROBLEMS = 5


def quote(value: object, limit: int = QUOTE_CHARS) -> str:
    """`repr(value)`, cut to `limit` characters: a client's value is echoed, never a megabyte of it."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def quote_id(value: str) -> str:
    """An id the client sent, whole (up to ID_CHARS; anything longer is no id of lmtune's)."""
    return quote(value, ID_CHARS)


def quote_names(names: Iterable[object], shown: int = SHOWN_PROBLEMS) -> str:
    """`['a', 'b', … 7 more]`: a few names, each cut short."""
    names = list(names)
    listed = ", ".join(quote(name) for name in names[:shown])
    return f"[{listed}{f', … {len(names) - shown:,} more' if len(names) > shown else ''}]"


def summarize(problems: list[str], total: int | None = None, shown: int = SHOWN_PROBLEMS) -> str:
    """The first `shown` problems, one a line, then how many more there are."""
    total = len(problems) if total is None else total
    lines = problems[:shown]
    if total > len(lines):
        lines = [*lines, f"… and {total - len(lines):,} more problems"]
    return "\n".join(lines)


def replace_paths(text: str, names: dict[str, str]) -> str:
    """`text` with each server path in `names` replaced by what a user knows it as (longest first,
    so a folder's name never splits a path inside it)."""
    for path in sorted((p for p in names if p), key=len, reverse=True):
        text = text.replace(path, names[path])
    return text
