"""How tool calls are written into a model's conversation and read back from what it answers.

There are two formats (docs/api.md, "Tool calling"), chosen per tokenizer by
workers/models/chat_format.tool_format_of:
- "template": the model's own chat template renders `tools`, assistant `tool_calls` and `tool`
  messages, and writes each call as a tagged JSON object (Qwen2.5's and Hermes' templates:
  `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`). The tags, and the text before the
  name and the arguments, are read off the template's own rendering of a probe conversation.
- "fallback", for every other template (one that ignores `tools`, drops `tool_calls`, fails on them
  or writes calls some other way): the Hermes/Qwen style in plain turns of the model's template. The
  tools are listed in the system message inside <tools></tools>; each call is
  `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>` in the assistant's content; the
  results of a turn's calls are one user turn of `<tool_response>\\n...\\n</tool_response>` blocks.

A model keeps the format it was trained in: the trainer writes it beside the tokenizer
(TOOL_FORMAT_FILE), and the model server reads it from there.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from lmtune.tool_calls import FALLBACK_CLOSE, FALLBACK_OPEN, Conversation

TOOL_FORMAT_FILE = "tool_format.json"


@dataclass(frozen=True)
class ToolFormat:
    """`open` is the text that starts a call (e.g. `<tool_call>\\n`), `close` the tag that ends it;
    `name_prefix` is what comes before the function's name in the call's JSON (`{"name": `), and
    `arguments_prefix` what lies between the name and the arguments (`, "arguments": `); both are
    empty when the template writes the arguments first."""

    kind: Literal["template", "fallback"]
    open: str
    close: str
    name_prefix: str = ""
    arguments_prefix: str = ""

    def prefill(self, tool_choice: str | dict) -> str:
        """The start of the answer when it must be a call (`required`, or a named function): the
        opening tag, and for a named function its name, cut where a token ends, as in training."""
        if tool_choice in ("auto", "none"):
            return ""
        if not self.name_prefix:
            return self.open.rstrip()
        if tool_choice == "required":
            return (self.open + self.name_prefix).rstrip()
        name = json.dumps(tool_choice["function"]["name"], ensure_ascii=False)
        return (self.open + self.name_prefix + name + self.arguments_prefix).rstrip()

    def save(self, folder: Path) -> None:
        (Path(folder) / TOOL_FORMAT_FILE).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, folder: str | Path) -> ToolFormat | None:
        """The format a model was trained in, if its folder says."""
        path = Path(folder) / TOOL_FORMAT_FILE
        try:
            return cls(**json.loads(path.read_text()))
        except (FileNotFoundError, NotADirectoryError):
            return None


FALLBACK = ToolFormat("fallback", FALLBACK_OPEN + "\n", FALLBACK_CLOSE, '{"name": ', ', "arguments": ')


def template_messages(conversation: Conversation) -> list[dict]:
    """The conversation as a chat template that renders tools takes it (arguments as objects)."""
    keys = ("role", "content", "name", "tool_calls", "tool_call_id")
    return [{key: message[key] for key in keys if key in message} for message in conversation.messages]


class CallSplitter:
    """Reads an answer as it grows and splits it into content and calls, for one choice.

    `feed(text)` and `finish()` return what is settled: `("content", text)` and `("call", {name,
    arguments})` with the arguments as a JSON string. A call is handed out once it is complete and
    parses: valid JSON with a listed function's `name` and an object of `arguments`; anything else,
    tags included, stays content. Content that might be the start of a call's tag is held back until
    it is known not to be; whitespace next to a call is dropped.
    """

    def __init__(self, tool_format: ToolFormat, names: set[str]):
        self.open, self.close, self.names = tool_format.open.strip(), tool_format.close.strip(), names
        self.buffer = self.pending = ""
        self.in_call = self.after_call = False
        self.calls = 0

    def feed(self, text: str) -> list[tuple[str, object]]:
        self.buffer += text
        settled: list[tuple[str, object]] = []
        while True:
            if self.in_call:
                end = self.buffer.find(self.close, len(self.open))
                if end < 0:
                    return settled
                settled += self._block(self.buffer[: end + len(self.close)], self.buffer[len(self.open) : end])
                self.buffer, self.in_call = self.buffer[end + len(self.close) :], False
            else:
                start = self.buffer.find(self.open)
                if start < 0:
                    cut = len(self.buffer) - _partial_tag(self.buffer, self.open)
                    settled += self._content(self.buffer[:cut])
                    self.buffer = self.buffer[cut:]
                    return settled
                settled += self._content(self.buffer[:start])
                self.buffer, self.in_call = self.buffer[start:], True

    def finish(self) -> list[tuple[str, object]]:
        """The rest, at the end of the answer: a call cut short of its closing tag still counts if
        its JSON is complete."""
        text, self.buffer = self.buffer, ""
        if self.in_call:
            settled = self._block(text, text[len(self.open) :])
        else:
            settled = self._content(text)
        if not self.calls and self.pending:
            settled.append(("content", self.pending))
        return settled

    def _block(self, whole: str, inner: str) -> list[tuple[str, object]]:
        call = parse_call(inner, self.names)
        if call is None:
            return self._content(whole)
        self.calls += 1
        self.pending, self.after_call = "", True
        return [("call", call)]

    def _content(self, text: str) -> list[tuple[str, object]]:
        text = self.pending + text
        if self.after_call:
            text = text.lstrip()
            self.after_call = not text
        body = text.rstrip()
        self.pending = text[len(body) :]
        return [("content", body)] if body else []


def parse_call(text: str, names: set[str]) -> dict | None:
    """`{"name": ..., "arguments": {...}}` (or `parameters`; the arguments may be an encoded JSON
    object) naming one of `names`, as `{name, arguments: <JSON string>}`; None if it is not one."""
    try:
        call = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(call, dict) or call.get("name") not in names:
        return None
    arguments = call.get("arguments", call.get("parameters"))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except (ValueError, RecursionError):
            return None
    if not isinstance(arguments, dict):
        return None
    return {"name": call["name"], "arguments": json.dumps(arguments, ensure_ascii=False)}


def _partial_tag(text: str, tag: str) -> int:
    """How many characters at the end of `text` could be the start of `tag`."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0
