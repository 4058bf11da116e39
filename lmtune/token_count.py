"""Counting a training file's tokens as the trainer will see them, without torch or transformers:
the model's `tokenizer.json` through the `tokenizers` library, its chat template through Jinja2
(sandboxed, with the options transformers renders templates with), ChatML where it has none.

The trainer (workers/training/data.py) tokenises each segment apart and adds BOS/EOS around
prompt/completion and text rows; this renders the same text and counts it whole, which agrees to a
token or two per example (the tests compare both on real tokenizers).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from jinja2 import TemplateError
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from lmtune.tool_calls import check_conversation, fallback_messages
from lmtune.training_data import Row

# the same template the trainer falls back to (workers/models/chat_format.py)
CHATML_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CHARS_PER_TOKEN = 4  # the guess when no tokenizer can be read here


class NoTokenizer(LookupError):
    """The model's tokenizer.json is not on this machine."""


@dataclass
class Counted:
    """Per example: its tokens after the cut to max_seq_length, and what the cut did."""

    lengths: list[int] = field(default_factory=list)
    truncated: int = 0  # examples longer than max_seq_length (cut from the end)
    dropped: int = 0  # examples whose answer starts past max_seq_length (skipped by the trainer)
    longest: int = 0  # tokens of the longest example before the cut


class TokenCounter:
    def __init__(self, folder: Path):
        tokenizer_file = folder / "tokenizer.json"
        if not tokenizer_file.is_file():
            raise NoTokenizer(f"no tokenizer.json in the model folder {folder.name}")
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        config_file = folder / "tokenizer_config.json"
        config = json.loads(config_file.read_text()) if config_file.is_file() else {}
        template_file = folder / "chat_template.jinja"
        template = template_file.read_text() if template_file.is_file() else config.get("chat_template")
        if isinstance(template, list):  # several named templates: the default one
            template = next((t["template"] for t in template if t.get("name") == "default"), template[0]["template"])
        self.bos, self.eos = _token_text(config.get("bos_token")), _token_text(config.get("eos_token"))
        environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
        environment.globals["raise_exception"] = _raise
        self.template = environment.from_string(template or CHATML_TEMPLATE)

    def count(self, rows: list[Row], max_seq_length: int) -> Counted:
        """The file's examples as the trainer will cut them; batched through the Rust tokenizer."""
        texts, prompts = [], []
        for row in rows:
            text, prompt = self._render(row)
            texts.append(text)
            prompts.append(prompt)
        lengths = [len(encoded.ids) for encoded in self.tokenizer.encode_batch(texts, add_special_tokens=False)]
        prompt_lengths = [
            len(encoded.ids) for encoded in self.tokenizer.encode_batch(prompts, add_special_tokens=False)
        ]
        counted = Counted()
        for length, prompt in zip(lengths, prompt_lengths):
            counted.longest = max(counted.longest, length)
            if prompt >= max_seq_length - 1:
                counted.dropped += 1  # no target token survives the cut: the trainer skips it
                continue
            counted.truncated += length > max_seq_length
            counted.lengths.append(min(length, max_seq_length))
        return counted

    def _render(self, row: Row) -> tuple[str, str]:
        """(the whole example, what comes before its first target token), as text."""
        if row.shape == "chat":
            messages = chat_turns(row)
            first = next((i for i, m in enumerate(messages) if m["role"] == "assistant"), len(messages))
            return self._chat(messages, False), self._chat(messages[:first], True)
        bos = self.bos or ""
        if row.shape == "prompt_completion":
            prompt = bos + row.data["prompt"]
            return prompt + row.data["completion"] + (self.eos or ""), prompt
        return bos + row.data["text"] + (self.eos or ""), bos

    def _chat(self, messages: list[dict], generation_prompt: bool) -> str:
        try:
            return self.template.render(
                messages=messages,
                add_generation_prompt=generation_prompt,
                bos_token=self.bos or "",
                eos_token=self.eos or "",
            )
        except TemplateError as error:
            raise NoTokenizer(f"the model's chat template cannot be rendered here ({error})") from None


def guess_lengths(rows: list[Row], max_seq_length: int) -> Counted:
    """Without a tokenizer: about one token per CHARS_PER_TOKEN characters of content."""
    counted = Counted()
    for row in rows:
        if row.shape == "chat":
            chars = sum(len(m["content"]) + 8 for m in chat_turns(row))
        else:
            chars = sum(len(row.data.get(key, "")) for key in ("prompt", "completion", "text"))
        length = max(1, chars // CHARS_PER_TOKEN)
        counted.longest = max(counted.longest, length)
        counted.truncated += length > max_seq_length
        counted.lengths.append(min(length, max_seq_length))
    return counted


def chat_turns(row: Row) -> list[dict]:
    """A chat row's `{role, content}` turns; a tool-calling row's in the fallback format, as a
    template that renders no tools gets them (one that does renders about as many tokens)."""
    data = row.data
    conversation = check_conversation(
        data["messages"], data.get("tools"), data.get("functions"), data.get("parallel_tool_calls")
    )
    if conversation.uses_tools:
        return fallback_messages(conversation)[0]
    return [{"role": m["role"], "content": m["content"]} for m in conversation.messages]


def _token_text(token) -> str | None:
    return token.get("content") if isinstance(token, dict) else token


def _raise(message: str):
    raise TemplateError(message)
