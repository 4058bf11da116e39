"""Answering a prompt with a model: the chat template as in training, `generate()`, stop sequences,
and the text handed out piece by piece as it is produced.

Used by the trainer for its sample answers at checkpoints and by the model server for
/v1/chat/completions and /v1/completions. Generation is `transformers`' own `generate()`, so a
greedy answer is exactly what `model.generate(do_sample=False)` gives; a stopping criterion reads
each new token to cut the text at a stop sequence or the end of the turn.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from workers.models.chat_format import CHATML_TEMPLATE

REPLACEMENT = "\ufffd"  # what a decoder shows for a UTF-8 sequence cut in the middle
# Below this temperature sampling is greedy decoding: the logits divided by it leave float range
# (1e-300 gives inf - inf = NaN probabilities), and long before that only the top token has any mass.
MIN_SAMPLING_TEMPERATURE = 1e-4
SEED_RANGE = 2**64  # torch's generator takes a seed in [-2**63, 2**64); any other int is folded into it


@dataclass(frozen=True)
class GenerationParams:
    max_tokens: int = 64
    temperature: float = 0.0  # 0 (or below MIN_SAMPLING_TEMPERATURE): greedy
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    n: int = 1


@dataclass
class Choice:
    index: int
    text: str = ""
    finish_reason: str | None = None  # "stop" | "length"
    tokens: int = 0
    token_ids: list[int] = field(default_factory=list)  # generate_batch: the answer's ids, its stop id included


def prompt_ids(tokenizer, prompt: str | list[dict]) -> list[int]:
    """Token ids of a prompt as training encodes it: chat messages through the tokenizer's chat
    template (ChatML when it has none) with the assistant's turn opened; plain text after BOS."""
    if isinstance(prompt, str):
        bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        return bos + tokenizer(prompt, add_special_tokens=False)["input_ids"]
    text = render_chat(tokenizer, prompt, generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def render_chat(tokenizer, messages: list[dict], generation_prompt: bool) -> str:
    plain = [{"role": m["role"], "content": m["content"]} for m in messages]
    return tokenizer.apply_chat_template(
        plain,
        tokenize=False,
        add_generation_prompt=generation_prompt,
        chat_template=tokenizer.chat_template or CHATML_TEMPLATE,
    )


def end_of_turn_ids(tokenizer) -> list[int]:
    """The ids that end an assistant turn: EOS, and the template's end-of-turn token (e.g. ChatML's
    `<|im_end|>`, which training teaches the model to emit) when that is a single token."""
    ids = {tokenizer.eos_token_id} - {None}
    probe = [{"role": "user", "content": "q"}]
    opened = render_chat(tokenizer, probe, generation_prompt=True)
    closed = render_chat(tokenizer, probe + [{"role": "assistant", "content": "a"}], generation_prompt=False)
    if closed.startswith(opened + "a"):
        marker = closed[len(opened) + 1 :].strip()
        if marker and marker in tokenizer.get_vocab():
            ids.add(tokenizer.convert_tokens_to_ids(marker))
    return sorted(ids)


@torch.no_grad()
def generate(
    model,
    tokenizer,
    ids: list[int],
    params: GenerationParams,
    *,
    stop_ids: list[int] | None = None,
    on_text: Callable[[int, str], None] = lambda index, text: None,
    cancelled: Callable[[], bool] = lambda: False,
    between_steps: Callable[[], None] = lambda: None,
) -> list[Choice]:
    """`params.n` answers to one prompt; `on_text(index, piece)` is called as each answer grows, and
    `between_steps()` after each token but the last (where the model server lets other answers step)."""
    stop_ids = stop_ids if stop_ids is not None else end_of_turn_ids(tokenizer)
    rows = _Rows(tokenizer, params, set(stop_ids), on_text, cancelled, between_steps)
    config = _config(params, stop_ids, _pad_id(tokenizer, stop_ids))
    device = next(model.parameters()).device
    inputs = torch.tensor([ids] * params.n, device=device)
    model.generate(
        input_ids=inputs,
        attention_mask=torch.ones_like(inputs),
        generation_config=config,
        stopping_criteria=StoppingCriteriaList([rows]),
    )
    return rows.finish()


class _Rows(StoppingCriteria):
    """Reads the newest token of every answer at each step: ends an answer at a stop id or a stop
    sequence, and hands out the text that can no longer change (a stop sequence might still be
    forming at the end, or a character might be half decoded)."""

    def __init__(self, tokenizer, params: GenerationParams, stop_ids: set[int], on_text, cancelled, between_steps):
        self.tokenizer, self.stop, self.stop_ids = tokenizer, [s for s in params.stop if s], stop_ids
        self.on_text, self.cancelled, self.between_steps = on_text, cancelled, between_steps
        self.hold = max((len(s) for s in self.stop), default=1) - 1
        self.choices = [Choice(index) for index in range(params.n)]
        self.tokens: list[list[int]] = [[] for _ in range(params.n)]
        self.sent = [""] * params.n

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        for choice, token in zip(self.choices, input_ids[:, -1].tolist()):
            if choice.finish_reason is None:
                self._add(choice, token)
        done = [choice.finish_reason is not None for choice in self.choices]
        if self.cancelled():
            done = [True] * len(done)
        elif not all(done):
            self.between_steps()
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    def _add(self, choice: Choice, token: int) -> None:
        choice.tokens += 1
        if token in self.stop_ids:
            choice.finish_reason = "stop"
            self._send(choice, self._text(choice))
            return
        self.tokens[choice.index].append(token)
        text = self._text(choice)
        cut = min((i for i in (text.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            choice.finish_reason = "stop"
            self._send(choice, text[:cut])
        else:
            settled = text[: len(text) - self.hold] if self.hold else text
            self._send(choice, settled.rstrip(REPLACEMENT))

    def _text(self, choice: Choice) -> str:
        return self.tokenizer.decode(self.tokens[choice.index], skip_special_tokens=True)

    def _send(self, choice: Choice, text: str) -> None:
        sent = self.sent[choice.index]
        if len(text) > len(sent) and text.startswith(sent):
            self.on_text(choice.index, text[len(sent) :])
            self.sent[choice.index] = text

    def finish(self) -> list[Choice]:
        for choice in self.choices:
            if choice.finish_reason is None:  # ran out of max_tokens (or was cancelled)
                choice.finish_reason = "length"
                self._send(choice, self._text(choice))
            choice.text = self.sent[choice.index]
        return self.choices


@torch.no_grad()
def generate_batch(
    model,
    tokenizer,
    prompts: list[list[int]],
    params: GenerationParams,
    *,
    stop_ids: list[int] | None = None,
    logits_processor: LogitsProcessor | None = None,
) -> list[Choice]:
    """One answer to each prompt, all generated together (left-padded, masked, with a KV cache): what
    an eval run, a batch of judge prompts or reinforcement fine-tuning's groups of answers need.
    Greedy answers are those `generate` gives one prompt at a time (up to the float rounding a padded
    batch may bring). `logits_processor` changes the scores before each token is chosen (reinforcement
    fine-tuning samples through one, greedy params picking its choice)."""
    stop_ids = stop_ids if stop_ids is not None else end_of_turn_ids(tokenizer)
    pad = _pad_id(tokenizer, stop_ids)
    width = max(len(prompt) for prompt in prompts)
    device = next(model.parameters()).device
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    config = _config(params, stop_ids, pad)
    processors = LogitsProcessorList([logits_processor] if logits_processor else [])
    output = model.generate(input_ids=ids, attention_mask=mask, generation_config=config, logits_processor=processors)
    choices = []
    for index, row in enumerate(output[:, width:].tolist()):
        ended = next((i for i, token in enumerate(row) if token in stop_ids), None)
        kept = row if ended is None else row[:ended]
        text = tokenizer.decode(kept, skip_special_tokens=True)
        cut = min((i for i in (text.find(s) for s in params.stop if s) if i >= 0), default=-1)
        reason = "stop" if ended is not None or cut >= 0 else "length"
        answer_ids = row if ended is None else row[: ended + 1]
        choices.append(Choice(index, text[:cut] if cut >= 0 else text, reason, len(answer_ids), answer_ids))
    return choices


def _pad_id(tokenizer, stop_ids: list[int]) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (stop_ids or [0])[0]


def _config(params: GenerationParams, stop_ids: list[int], pad: int) -> GenerationConfig:
    """`generate()`'s settings for these params (greedy at temperature 0, or below
    MIN_SAMPLING_TEMPERATURE); seeds torch when asked (any integer, folded into its range)."""
    sampling = params.temperature >= MIN_SAMPLING_TEMPERATURE
    if params.seed is not None:
        torch.manual_seed(params.seed % SEED_RANGE)
    return GenerationConfig(
        max_new_tokens=params.max_tokens,
        do_sample=sampling,
        temperature=params.temperature if sampling else None,
        top_p=params.top_p if sampling else None,
        top_k=0,  # 0, not None: None lets generate() fill in its top-k of 50; OpenAI samples from every token
        eos_token_id=stop_ids or None,
        pad_token_id=pad,
        use_cache=True,
    )
