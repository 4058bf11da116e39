"""Generated training data for tests, benchmarks and offline demos (no dataset hub needed).

`chat`: the assistant answers with the user's words in upper case, a task a tiny byte-level model
learns. Lengths follow a log-normal spread, like real chat data (many short, a few long).
`tools`: OpenAI's tool-calling rows: the assistant calls get_weather or get_local_time for the city
the user names, and after the call's result answers in words. Cities are drawn from CITIES, or from
HELD_OUT_CITIES (which training never sees) to test a model on new arguments.
`preference`: OpenAI's preference rows (DPO) on the chat task: the answer in capitals is preferred
to the same words as the user wrote them.
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


def preference_examples(n: int, seed: int = 0, median_words: int = 6, spread: float = 0.0) -> list[dict]:
    """The chat task's rows as pairs: the capitals preferred, the words unchanged not."""
    return [
        {
            "input": {"messages": row["messages"][:-1]},
            "preferred_output": [row["messages"][-1]],
            "non_preferred_output": [{"role": "assistant", "content": row["messages"][1]["content"]}],
        }
        for row in chat_examples(n, seed, median_words, spread)
    ]


CITIES = (
    "Paris Lyon Berlin Madrid Rome Vienna Prague Warsaw Oslo Dublin Lisbon Athens Cairo Lagos Nairobi "
    "Lima Quito Bogota Havana Denver Boston Dallas Austin Seattle Toronto Montreal Sydney Perth Tokyo Osaka "
    "Seoul Hanoi Manila Jakarta Mumbai Delhi Dhaka Karachi Tehran Dubai"
).split()
HELD_OUT_CITIES = "Helsinki Santiago Edinburgh Geneva Kyoto Vancouver".split()
WEATHER_QUESTIONS = ("What is the weather in {}?", "Is it raining in {} right now?", "How hot is it in {}?")
TIME_QUESTIONS = ("What time is it in {}?", "What is the local time in {}?", "Tell me the current time in {}.")
SKIES = ("clear", "cloudy", "rainy", "foggy")


def _city_tool(name: str, description: str) -> dict:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }


TOOLS = [
    _city_tool("get_weather", "The current weather in a city"),
    _city_tool("get_local_time", "The local time in a city"),
]


def tool_examples(n: int, seed: int = 0, cities: tuple[str, ...] | list[str] = CITIES) -> list[dict]:
    """Rows of one question and a call; every other row also has the result and a spoken answer."""
    rng = random.Random(seed)
    rows = []
    for index in range(n):
        city = rng.choice(cities)
        weather = rng.random() < 0.5
        name = "get_weather" if weather else "get_local_time"
        question = rng.choice(WEATHER_QUESTIONS if weather else TIME_QUESTIONS).format(city)
        call_id = f"call_{seed}_{index}"
        messages = [
            {"role": "user", "content": question},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": name, "arguments": json.dumps({"city": city})},
                    }
                ],
            },
        ]
        if index % 2:
            degrees, sky = rng.randint(-5, 35), rng.choice(SKIES)
            hour, minute = rng.randint(0, 23), rng.randint(0, 59)
            result = {"degrees": degrees, "sky": sky} if weather else {"time": f"{hour:02d}:{minute:02d}"}
            answer = (
                f"It is {degrees} degrees and {sky} in {city}."
                if weather
                else f"It is {hour:02d}:{minute:02d} in {city}."
            )
            messages += [
                {"role": "tool", "tool_call_id": call_id, "content": json.dumps(result)},
                {"role": "assistant", "content": answer},
            ]
        rows.append({"messages": messages, "tools": TOOLS, "parallel_tool_calls": False})
    return rows


def write_jsonl(rows: list[dict], path: str | Path) -> Path:
    path = Path(path)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path
