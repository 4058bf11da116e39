"""OpenAI's preference rows, for DPO, checked:

    {"input": {"messages": [...], "tools": [...], "parallel_tool_calls": true},
     "preferred_output": [{"role": "assistant", ...}], "non_preferred_output": [{"role": "assistant", ...}]}

The input is a conversation in OpenAI's chat shape (tools included) that ends before the
assistant's turn; each output is that one turn (text, or tool calls of the listed functions). Both
outputs are checked as the end of the input's conversation (lmtune/tool_calls.py), and a problem
names its field as the row spells it (`non_preferred_output[0].tool_calls[0].function.arguments`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lmtune.problems import quote_names
from lmtune.tool_calls import Conversation, ToolProblem, check_conversation

SIDES = ("preferred_output", "non_preferred_output")
KEYS = ("input", *SIDES)
INPUT_KEYS = ("messages", "tools", "parallel_tool_calls")
SHAPE = '{"input": {"messages": [...]}, "preferred_output": [{assistant message}], "non_preferred_output": [...]}'


@dataclass(frozen=True)
class PreferencePair:
    """The input's conversation followed by each output; the output is the one assistant turn
    trained on (weight 1), every assistant turn of the input has weight 0."""

    chosen: Conversation
    rejected: Conversation


def is_preference_row(data: dict) -> bool:
    return any(key in data for key in KEYS)


def check_preference_row(data: dict) -> PreferencePair:
    missing = [key for key in KEYS if key not in data]
    if missing:
        raise ValueError(f"a preference row needs {quote_names(missing)} too: {SHAPE}")
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise ValueError(f"unknown keys {quote_names(unknown)} in a preference row: {SHAPE}")
    given = data["input"]
    if not isinstance(given, dict) or "messages" not in given:
        raise ValueError('input: must be an object with "messages" (and optionally "tools", "parallel_tool_calls")')
    unknown = sorted(set(given) - set(INPUT_KEYS))
    if unknown:
        raise ValueError(f"input: unknown keys {quote_names(unknown)}; allowed: {quote_names(list(INPUT_KEYS))}")
    messages = given["messages"]
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
        if messages[-1].get("role") == "assistant":
            raise ValueError(
                f"input.messages[{len(messages) - 1}]: the input ends with an assistant message; it must end "
                "where the assistant answers, and the outputs hold the two answers"
            )
    chosen, rejected = (_with_output(given, messages, data[side], side) for side in SIDES)
    return PreferencePair(chosen, rejected)


def _with_output(given: dict, messages: object, output: object, side: str) -> Conversation:
    if not isinstance(output, list) or len(output) != 1:
        raise ValueError(f"{side}: must be a list of one assistant message (the answer to the input)")
    message = output[0]
    if not isinstance(message, dict) or message.get("role") != "assistant":
        raise ValueError(f'{side}[0]: must be an assistant message, {{"role": "assistant", "content": ...}}')
    if "weight" in message:
        raise ValueError(f"{side}[0].weight: weight is for chat rows; a preference row trains on each output")
    inputs = len(messages) if isinstance(messages, list) else 0
    try:
        conversation = check_conversation(
            [*messages, message] if isinstance(messages, list) else messages,
            given.get("tools"),
            None,
            given.get("parallel_tool_calls"),
        )
    except ToolProblem as problem:
        raise ValueError(_as_written(problem, inputs, side)) from None
    last = len(conversation.messages) - 1
    turns = [
        {**turn, "weight": int(index == last)} if turn["role"] == "assistant" else turn
        for index, turn in enumerate(conversation.messages)
    ]
    return Conversation(turns, conversation.tools, conversation.parallel_tool_calls)


def _as_written(problem: ToolProblem, inputs: int, side: str) -> str:
    """The problem with its field as the row spells it: `input.messages[2]`, `input.tools`, `preferred_output[0]`."""
    message = str(problem)[len(problem.field) + 2 :]
    match = re.match(r"messages\[(\d+)\](.*)", problem.field)
    if match and int(match[1]) >= inputs:
        field = f"{side}[0]{match[2]}"
    else:
        field = f"input.{problem.field}"
    return f"{field}: {message}"
