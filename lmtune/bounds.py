"""Types for bounded request fields, shared by the job spec, the graders and the evals: a field
that takes "auto" or a number in a range, and a list or mapping refused past a length before any
item is validated. Imports nothing of lmtune's but its messages (lmtune/problems.py), so every
schema module can use them."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from lmtune.problems import quote

MAX_BATCH_SIZE = 256


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


def at_most_items(limit: int):
    """A list or mapping of at most `limit` items, refused before any item is validated (a body
    of a million items costs one length check, not a million errors)."""

    def check(value: Any) -> Any:
        if isinstance(value, (list, dict)) and len(value) > limit:
            raise ValueError(f"at most {limit} items are allowed, got {len(value):,}")
        return value

    return BeforeValidator(check)
