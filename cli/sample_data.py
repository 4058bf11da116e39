"""Generated training data for tests, benchmarks and offline demos (no dataset hub needed).

The task is learnable by a tiny byte-level model: the assistant answers with the user's words
in upper case. Lengths follow a log-normal spread, like real chat data (many short, a few long).
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

WORDS = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november "
    "oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu"
).split()


def chat_examples(n: int, seed: int = 0, median_words: int = 6, spread: float = 0.0) -> list[dict]:
    """`spread` is the sigma of the log-normal word count; 0 gives every example the same length."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        count = max(1, round(median_words * math.exp(rng.gauss(0, spread)))) if spread else median_words
        words = " ".join(rng.choice(WORDS) for _ in range(count))
        rows.append(
            {
                "messages": [
                    {"role": "system", "content": "Answer in capitals."},
                    {"role": "user", "content": words},
                    {"role": "assistant", "content": words.upper()},
                ]
            }
        )
    return rows


def write_jsonl(rows: list[dict], path: str | Path) -> Path:
    path = Path(path)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path
