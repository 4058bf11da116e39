"""Turning a validated row into text segments, each marked as trained on (target) or not.

Chat rows are rendered with the tokenizer's own chat template. An assistant turn's target span is
what the template adds for that turn after the generation prompt (its content, its tool calls and
its end-of-turn marker), found by rendering the conversation up to each turn. A tokenizer without a
template gets CHATML_TEMPLATE, the ChatML format many open models use.

A conversation with tools is written in the tokenizer's tool format (workers/models/tool_format.py):
through the template itself when it renders tools, calls and their results, else in the fallback
format's plain turns. Either way the calls are in assistant turns (trained on) and the results in
tool or user turns (not).
"""

from __future__ import annotations

import json
import weakref

from lmtune.token_count import CHATML_TEMPLATE  # shared with the API's token count
from lmtune.tool_calls import Conversation, check_conversation, fallback_messages
from lmtune.training_data import Row
from workers.models.tool_format import FALLBACK, ToolFormat, template_messages

__all__ = ["CHATML_TEMPLATE", "row_segments", "chat_segments", "tool_format_of"]

Segments = list[tuple[str, bool]]


class TemplateError(ValueError):
    """The chat template does not render conversations as growing prefixes."""


def row_segments(row: Row, tokenizer) -> tuple[Segments, bool]:
    """Segments of the row and whether it is already a full document (chat: the template adds BOS)."""
    if row.shape == "chat":
        data = row.data
        conversation = check_conversation(
            data["messages"], data.get("tools"), data.get("functions"), data.get("parallel_tool_calls")
        )
        return chat_segments(conversation, tokenizer), True
    if row.shape == "prompt_completion":
        return [(row.data["prompt"], False), (row.data["completion"], True)], False
    return [(row.data["text"], True)], False


def chat_segments(conversation: Conversation, tokenizer) -> Segments:
    turns, assistant_turns, tools = conversation_turns(conversation, tokenizer)
    weights = [message["weight"] == 1 for message in conversation.messages if message["role"] == "assistant"]
    return turn_segments(tokenizer, turns, dict(zip(assistant_turns, weights)), tools)


def conversation_turns(
    conversation: Conversation, tokenizer, tool_format: ToolFormat | None = None, offer_tools: bool = True
) -> tuple[list[dict], list[int], list[dict] | None]:
    """The messages to render, where the conversation's assistant turns are among them, and the tools
    to hand the template. `tool_format` defaults to the tokenizer's; `offer_tools: False` renders the
    conversation without its tools (tool_choice `none`)."""
    if not conversation.uses_tools:
        turns = [{"role": message["role"], "content": message["content"]} for message in conversation.messages]
    elif (tool_format or tool_format_of(tokenizer)).kind == "template":
        turns = template_messages(conversation)
        return turns, _assistant_turns(turns), conversation.tools if offer_tools else None
    else:
        turns, assistant_turns = fallback_messages(conversation, offer_tools)
        return turns, assistant_turns, None
    return turns, _assistant_turns(turns), None


def conversation_prompt_ids(
    tokenizer, conversation: Conversation, tool_format: ToolFormat, offer_tools: bool, prefill: str = ""
) -> list[int]:
    """A prompt as training encodes it, the assistant's turn opened (and begun with `prefill`,
    tokenised apart as training's target span is)."""
    turns, _, tools = conversation_turns(conversation, tokenizer, tool_format, offer_tools)
    ids = tokenizer(render(tokenizer, turns, tools=tools, generation_prompt=True), add_special_tokens=False)
    return ids["input_ids"] + (tokenizer(prefill, add_special_tokens=False)["input_ids"] if prefill else [])


def render(tokenizer, messages: list[dict], *, tools: list[dict] | None = None, generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(
        messages,
        tools=tools,
        tokenize=False,
        add_generation_prompt=generation_prompt,
        chat_template=tokenizer.chat_template or CHATML_TEMPLATE,
    )


def turn_segments(tokenizer, turns: list[dict], targets: dict[int, bool], tools: list[dict] | None = None) -> Segments:
    """The rendered turns cut at each assistant turn in `targets` (position -> trained on)."""
    full = render(tokenizer, turns, tools=tools)
    segments: Segments = []
    cursor = 0
    for index in sorted(targets):
        opened = render(tokenizer, turns[:index], tools=tools, generation_prompt=True)
        upto = render(tokenizer, turns[: index + 1], tools=tools)
        start = len(opened)
        if not (cursor <= start <= len(upto) and upto.startswith(opened) and full.startswith(upto)):
            raise TemplateError(
                "the model's chat template does not render a conversation as a growing prefix, so "
                "assistant turns cannot be located; use a model whose template does, or text rows"
            )
        segments += [(full[cursor:start], False), (full[start : len(upto)], targets[index])]
        cursor = len(upto)
    segments.append((full[cursor:], False))
    return [(text, target) for text, target in segments if text]


def _assistant_turns(turns: list[dict]) -> list[int]:
    return [index for index, turn in enumerate(turns) if turn["role"] == "assistant"]


# A conversation that uses every part of tool calling, with words no template writes by itself:
# a template renders tools only if all of them show in what it renders.
PROBE_NAME = "lmtune_probe_lookup"
PROBE_ARGUMENTS = ({"lmtune_probe_key": "lmtune probe value one"}, {"lmtune_probe_key": "lmtune probe value two"})
PROBE_RESULTS = ("lmtune probe result one", "lmtune probe result two")
PROBE_ANSWER = "lmtune probe answer"
PROBE = Conversation(
    [
        {"role": "user", "content": "lmtune probe question"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": f"call_probe_{i}", "type": "function", "function": {"name": PROBE_NAME, "arguments": arguments}}
                for i, arguments in enumerate(PROBE_ARGUMENTS)
            ],
        },
        *(
            {"role": "tool", "tool_call_id": f"call_probe_{i}", "name": PROBE_NAME, "content": result}
            for i, result in enumerate(PROBE_RESULTS)
        ),
        {"role": "assistant", "content": PROBE_ANSWER},
    ],
    tools=[
        {
            "type": "function",
            "function": {
                "name": PROBE_NAME,
                "description": "lmtune probe description",
                "parameters": {
                    "type": "object",
                    "properties": {"lmtune_probe_key": {"type": "string"}},
                    "required": ["lmtune_probe_key"],
                },
            },
        }
    ],
)
_formats: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def tool_format_of(tokenizer) -> ToolFormat:
    """The format tool calls take with this tokenizer: its template's own when the template renders
    the probe's tools, calls and results as growing prefixes with each call a tagged JSON object;
    else the fallback."""
    if tokenizer not in _formats:
        try:
            _formats[tokenizer] = _template_format(tokenizer) or FALLBACK
        except Exception:  # a template may fail in any way on what it does not know (jinja, type errors)
            _formats[tokenizer] = FALLBACK
    return _formats[tokenizer]


def _template_format(tokenizer) -> ToolFormat | None:
    turns = template_messages(PROBE)
    full = render(tokenizer, turns, tools=PROBE.tools)
    shown = ["lmtune probe description", *(a["lmtune_probe_key"] for a in PROBE_ARGUMENTS), *PROBE_RESULTS]
    if not all(text in full for text in shown):
        return None  # it ignores tools, or drops the calls or their results
    targets = [text for text, target in turn_segments(tokenizer, turns, {1: True, 4: True}, PROBE.tools) if target]
    if len(targets) != 2:
        return None
    calls, answer = targets
    end_of_turn = answer[answer.find(PROBE_ANSWER) + len(PROBE_ANSWER) :]
    if end_of_turn and calls.endswith(end_of_turn):
        calls = calls[: -len(end_of_turn)]
    found = _probe_calls(calls)
    if len(found) != 2:
        return None
    (start1, end1), (start2, end2) = found
    open_tag, close_tag, between = calls[:start1].strip(), calls[end2:].strip(), calls[end1:start2].strip()
    if not (open_tag and close_tag and len(between) >= len(close_tag) + len(open_tag)):
        return None
    if not (between.startswith(close_tag) and between.endswith(open_tag)):
        return None
    if between[len(close_tag) : len(between) - len(open_tag)].strip():
        return None  # more than whitespace between one call's closing tag and the next one's opening
    call = calls[start1:end1]
    name, arguments = json.dumps(PROBE_NAME), json.dumps(PROBE_ARGUMENTS[0], ensure_ascii=False)
    name_at, arguments_at = call.find(name), call.find(arguments)
    if 0 <= name_at < arguments_at:
        prefixes = call[:name_at], call[name_at + len(name) : arguments_at]
    else:
        prefixes = "", ""
    return ToolFormat("template", calls[:start1], close_tag, *prefixes)


def _probe_calls(text: str) -> list[tuple[int, int]]:
    """Where the probe's calls are in `text`, as JSON objects with its name and arguments."""
    decoder, found = json.JSONDecoder(), []
    start = text.find("{")
    while start >= 0 and len(found) < len(PROBE_ARGUMENTS):
        try:
            value, end = decoder.raw_decode(text, start)
        except ValueError:
            value, end = None, start + 1
        expected = PROBE_ARGUMENTS[len(found)]
        if isinstance(value, dict) and value.get("name") == PROBE_NAME:
            arguments = value.get("arguments", value.get("parameters"))
            if arguments == expected or arguments == json.dumps(expected):
                found.append((start, end))
                start = text.find("{", end)
                continue
        start = text.find("{", start + 1)
    return found
