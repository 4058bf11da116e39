"""Putting a request to a model and reading its answers back, with tool calls in the format the model
was trained in (workers/models/tool_format.py).

`tool_choice`: `none` renders the conversation (its earlier calls and results included) without
offering the tools, and reads nothing back; `auto` offers them and reads back the calls the model
makes; `required` also begins the answer with a call's opening (`<tool_call>\\n{"name":` in the
fallback format), and a named function with the call's opening and that name, so that the model
goes on with a call. What is enforced is that beginning: the name under `required` and the
arguments are the model's own, and an answer that still does not parse stays content.
`parallel_tool_calls: false` ends the answer at the first call's closing tag.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace

from lmtune.tool_calls import Conversation, function_names
from workers.models.chat_format import conversation_prompt_ids, tool_format_of
from workers.models.generation import Choice, GenerationParams, prompt_ids
from workers.models.tool_format import CallSplitter, ToolFormat


@dataclass(frozen=True)
class ToolRequest:
    tools: list[dict] | None = None
    tool_choice: str | dict = "auto"  # "none" | "auto" | "required" | {"type": "function", "function": {"name"}}
    parallel_tool_calls: bool = True


class Reading:
    """The prompt's ids and the generation settings for one request, and `on_text` to give
    generation: it hands content to `on_text(index, text)` and each complete call to
    `on_call(index, {index, id, name, arguments})`. `finish(choices)` settles the rest and marks
    the answers that call tools with finish_reason `tool_calls`."""

    def __init__(
        self,
        tokenizer,
        prompt: str | list[dict],
        params: GenerationParams,
        request: ToolRequest | None,
        tool_format: Callable[[], ToolFormat | None],
        on_text: Callable[[int, str], None],
        on_call: Callable[[int, dict], None],
    ):
        request = request or ToolRequest()
        self.params, self._on_text, self._on_call = params, on_text, on_call
        self.splitters: list[CallSplitter] = []
        conversation = None
        if isinstance(prompt, list):
            conversation = Conversation(prompt, request.tools, request.parallel_tool_calls)
        if conversation is None or not conversation.uses_tools:
            self.ids = prompt_ids(tokenizer, prompt)
            return
        chosen = tool_format() or tool_format_of(tokenizer)
        offer = bool(request.tools) and request.tool_choice != "none"
        prefill = chosen.prefill(request.tool_choice) if offer else ""
        self.ids = conversation_prompt_ids(tokenizer, conversation, chosen, offer, prefill)
        if not offer:
            return
        if not request.parallel_tool_calls:
            self.params = replace(params, stop=(*params.stop, chosen.close.strip()))
        names = set(function_names(request.tools))
        self.splitters = [CallSplitter(chosen, names) for _ in range(params.n)]
        self.calls = [0] * params.n
        for index, splitter in enumerate(self.splitters):
            self._hand_out(index, splitter.feed(prefill))

    def on_text(self, index: int, text: str) -> None:
        if self.splitters:
            self._hand_out(index, self.splitters[index].feed(text))
        else:
            self._on_text(index, text)

    def finish(self, choices: list[Choice]) -> None:
        for index, splitter in enumerate(self.splitters):
            self._hand_out(index, splitter.finish())
            if self.calls[index] and choices[index].finish_reason == "stop":
                choices[index].finish_reason = "tool_calls"

    def _hand_out(self, index: int, settled: list[tuple[str, object]]) -> None:
        for kind, value in settled:
            if kind == "content":
                self._on_text(index, value)
            else:
                call = {"index": self.calls[index], "id": f"call_{secrets.token_hex(12)}", **value}
                self.calls[index] += 1
                self._on_call(index, call)
