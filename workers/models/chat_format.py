"""Turning a validated row into text segments, each marked as trained on (target) or not.

Chat rows are rendered with the tokenizer's own chat template. An assistant turn's target span is
what the template adds for that turn after the generation prompt (its content and end-of-turn
marker), found by rendering the conversation up to each turn. A tokenizer without a template gets
CHATML_TEMPLATE, the ChatML format many open models use.
"""

from __future__ import annotations

from lmtune.token_count import CHATML_TEMPLATE  # shared with the API's token count
from lmtune.training_data import Row

__all__ = ["CHATML_TEMPLATE", "row_segments", "chat_segments"]

Segments = list[tuple[str, bool]]


class TemplateError(ValueError):
    """The chat template does not render conversations as growing prefixes."""


def row_segments(row: Row, tokenizer) -> tuple[Segments, bool]:
    """Segments of the row and whether it is already a full document (chat: the template adds BOS)."""
    if row.shape == "chat":
        return chat_segments(row.data["messages"], tokenizer), True
    if row.shape == "prompt_completion":
        return [(row.data["prompt"], False), (row.data["completion"], True)], False
    return [(row.data["text"], True)], False


def chat_segments(messages: list[dict], tokenizer) -> Segments:
    plain = [{"role": m["role"], "content": m["content"]} for m in messages]
    template = tokenizer.chat_template or CHATML_TEMPLATE

    def render(upto: int, generation_prompt: bool = False) -> str:
        return tokenizer.apply_chat_template(
            plain[:upto], tokenize=False, add_generation_prompt=generation_prompt, chat_template=template
        )

    full = render(len(plain))
    segments: Segments = []
    cursor = 0
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start, end = len(render(index, generation_prompt=True)), len(render(index + 1))
        if not (cursor <= start <= end and full.startswith(render(index + 1))):
            raise TemplateError(
                "the model's chat template does not render a conversation as a growing prefix, so "
                "assistant turns cannot be located; use a model whose template does, or text rows"
            )
        segments += [(full[cursor:start], False), (full[start:end], message.get("weight", 1) == 1)]
        cursor = end
    segments.append((full[cursor:], False))
    return [(text, target) for text, target in segments if text]
