"""The models a model server keeps loaded, and answering with them.

Recently used models stay in memory, bounded by count and by bytes; the least recently used one
that is not answering is unloaded to make room. A LoRA model (a LoRA job's checkpoint or final
model) is its adapter applied over its base, which is loaded once and shared by every adapter
trained on it: each adapter is one more entry, of the adapter's size.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from workers.model_download import fetch
from workers.model_sources import ensure_builtin_model
from workers.models.errors import ModelLoadError
from workers.models.generation import (
    Choice,
    GenerationParams,
    end_of_turn_ids,
    generate,
    generate_batch,
    prompt_ids,
)
from workers.models.loading import load_tokenizer
from workers.models.tool_format import ToolFormat
from workers.serving.tool_answers import Reading, ToolRequest
from workers.serving.turns import Turns


class PromptTooLong(ValueError):
    pass


@dataclass
class _Base:
    """A loaded base model and the adapters loaded over it (adapter folder -> adapter name)."""

    source: str
    model: object
    tokenizer: object
    stop_ids: list[int]
    bytes: int
    adapters: OrderedDict = field(default_factory=OrderedDict)
    adapter_bytes: dict = field(default_factory=dict)
    turns: Turns = field(default_factory=Turns)  # one step at a time: the active adapter is shared state
    active: object = None  # the adapter folder active in the model (None: the base alone; UNKNOWN: after a change)
    users: int = 0


UNKNOWN = object()


@dataclass
class Held:
    """A model kept loaded for one request: its base, the adapter over it, how long loading took."""

    base: _Base
    adapter: str | None
    model: dict
    load_seconds: float


def _activate(base: _Base, adapter: str | None) -> None:
    """The adapter active for the next step, or the base alone under adapters loaded for others."""
    if base.active == adapter or not base.adapters and base.active is None:
        return
    tuner = base.model.base_model
    if adapter is None:
        tuner.disable_adapter_layers()
    else:
        tuner.enable_adapter_layers()
        base.model.set_adapter(base.adapters[adapter])
    base.active = adapter


@dataclass
class Answer:
    choices: list[Choice]
    prompt_tokens: int


class ModelCache:
    def __init__(self, max_models: int, max_bytes: int, device: str | None = None, batch_size: int = 16):
        self.max_models, self.max_bytes, self.batch_size = max_models, max_bytes, batch_size
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = torch.bfloat16 if self.device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
        self._bases: OrderedDict[str, _Base] = OrderedDict()
        self._lock = threading.Lock()  # guards the tables; loading happens outside it, under _loading
        self._loading = threading.Lock()

    @property
    def loaded(self) -> list[str]:
        """What is in memory, least recently used first: base sources and `base+adapter` pairs."""
        with self._lock:
            return [
                name
                for base in self._bases.values()
                for name in (base.source, *(f"{base.source}+{a}" for a in base.adapters))
            ]

    @contextmanager
    def holding(self, model: dict) -> Iterator[Held]:
        """The model loaded (what is missing is loaded now, timed) and kept loaded while held."""
        started = time.monotonic()
        base_ref, adapter = (model["base"], model["adapter"]) if model.get("adapter") else (model, None)
        base = self._get(base_ref, adapter)
        try:
            yield Held(base, adapter, model, time.monotonic() - started)
        finally:
            with self._lock:
                base.users -= 1

    def answer(self, model: dict, prompt: str | list[dict], params: GenerationParams, *events, **options) -> Answer:
        """Load what is missing, then answer (see `answer_held`)."""
        with self.holding(model) as held:
            return self.answer_held(held, prompt, params, *events, **options)

    def answer_held(
        self,
        held: Held,
        prompt: str | list[dict],
        params: GenerationParams,
        on_start,
        on_text,
        cancelled,
        tools: ToolRequest | None = None,
        on_call=lambda index, call: None,
    ) -> Answer:
        """Answer with a held model, told to `on_start(load_seconds, prompt_tokens)` once it begins;
        content goes to `on_text(index, text)` and tool calls to `on_call(index, call)`. Answers
        generated at once on one base take turns token by token."""
        base, adapter = held.base, held.adapter
        with base.turns.turn() as turn:
            # the format a fine-tuned model was trained in is saved beside its weights
            trained_in = lambda: ToolFormat.load(adapter or held.model["source"])  # noqa: E731
            reading = Reading(base.tokenizer, prompt, params, tools, trained_in, on_text, on_call)
            ids = reading.ids
            limit = getattr(base.model.config, "max_position_embeddings", None)
            if limit and len(ids) + params.max_tokens > limit:
                raise PromptTooLong(
                    f"the prompt ({len(ids)} tokens) and max_tokens ({params.max_tokens}) exceed "
                    f"the model's context of {limit} tokens"
                )
            on_start(held.load_seconds, len(ids))

            def between_steps() -> None:
                if turn.pass_on():  # others had their step: the adapter may have changed
                    _activate(base, adapter)

            _activate(base, adapter)
            choices = generate(
                base.model,
                base.tokenizer,
                ids,
                reading.params,
                stop_ids=base.stop_ids,
                on_text=reading.on_text,
                cancelled=cancelled,
                between_steps=between_steps,
            )
            reading.finish(choices)
        return Answer(choices, len(ids))

    def answer_batch(self, model: dict, prompts: list[str | list[dict]], params: GenerationParams) -> list[Answer]:
        """One answer to each prompt (params.n is 1), generated in batches together: an eval run's
        samples, a batch of judge prompts. A prompt too long for the model gets an empty answer with
        finish_reason `length`."""
        with self.holding(model) as held, held.base.turns.turn():
            base, adapter = held.base, held.adapter
            _activate(base, adapter)
            ids = [prompt_ids(base.tokenizer, prompt) for prompt in prompts]
            limit = getattr(base.model.config, "max_position_embeddings", None) or 1 << 30
            answers = [Answer([Choice(0, "", "length")], len(row)) for row in ids]
            fits = [i for i, row in enumerate(ids) if len(row) + params.max_tokens <= limit]
            for start in range(0, len(fits), self.batch_size):
                chunk = fits[start : start + self.batch_size]
                choices = generate_batch(
                    base.model, base.tokenizer, [ids[i] for i in chunk], params, stop_ids=base.stop_ids
                )
                for i, choice in zip(chunk, choices):
                    answers[i] = Answer([choice], len(ids[i]))
            return answers

    def _get(self, base_ref: dict, adapter: str | None) -> _Base:
        """The base with the adapter loaded, marked in use and most recently used."""
        source = base_ref["source"]
        with self._lock:  # the common case: all loaded, nothing to wait for
            base = self._bases.get(source)
            if base is not None and (adapter is None or adapter in base.adapters):
                self._touch(base, adapter)
                return base
        with self._loading:
            with self._lock:
                base = self._bases.get(source)
            if base is None:
                if base_ref.get("builtin"):
                    ensure_builtin_model(Path(source))
                self._make_room(_size_on_disk(source))
                base = self._load_base(source)
            if adapter is not None and adapter not in base.adapters:
                self._make_room(_size_on_disk(adapter))
                with base.turns.turn():  # answers on this base may be under way: wrapping it waits for a turn
                    self._load_adapter(base, adapter)
            with self._lock:
                self._bases[source] = base
                self._touch(base, adapter)
        return base

    def _touch(self, base: _Base, adapter: str | None) -> None:
        self._bases.move_to_end(base.source)
        if adapter is not None:
            base.adapters.move_to_end(adapter)
        base.users += 1

    def _load_base(self, source: str) -> _Base:
        try:  # a hub model not in the cache: downloaded once, its progress shown in /v1/models
            fetch(source)
        except Exception as error:
            raise ModelLoadError(f"cannot download {source}: {type(error).__name__}: {str(error)[:300]}") from None
        tokenizer = load_tokenizer(source)
        try:
            model = AutoModelForCausalLM.from_pretrained(source, dtype=self.dtype).to(self.device).eval()
        except (OSError, ValueError) as error:
            raise ModelLoadError(f"cannot load {source}: {error}") from None
        size = sum(p.numel() * p.element_size() for p in model.parameters())
        return _Base(source, model, tokenizer, end_of_turn_ids(tokenizer), size)

    def _load_adapter(self, base: _Base, adapter: str) -> None:
        from peft import PeftModel

        name = f"adapter-{len(base.adapter_bytes)}-{abs(hash(adapter))}"
        if hasattr(base.model, "peft_config"):
            base.model.load_adapter(adapter, adapter_name=name)
        else:
            base.model = PeftModel.from_pretrained(base.model, adapter, adapter_name=name).eval()
        base.adapters[adapter] = name
        base.adapter_bytes[adapter] = _size_on_disk(adapter)
        base.active = UNKNOWN

    def _make_room(self, incoming: int) -> None:
        """Unload least recently used models that are not answering until one more of `incoming` bytes fits."""
        with self._lock:
            while self._count() + 1 > self.max_models or self._bytes() + incoming > self.max_bytes:
                idle = [b for b in self._bases.values() if b.users == 0]
                if not idle:
                    return  # everything is answering; the queue in front bounds how far this goes
                victim = idle[0]
                if victim.adapters:
                    adapter, name = victim.adapters.popitem(last=False)
                    victim.model.delete_adapter(name)
                    victim.adapter_bytes.pop(adapter)
                    victim.active = UNKNOWN
                else:
                    del self._bases[victim.source]
        if self.device == "cuda":
            torch.cuda.empty_cache()

    def _count(self) -> int:
        return sum(1 + len(b.adapters) for b in self._bases.values())

    def _bytes(self) -> int:
        return sum(b.bytes + sum(b.adapter_bytes.values()) for b in self._bases.values())


def _size_on_disk(source: str) -> int:
    """The weights' size, to make room before loading; 0 for a hub id (known once loaded)."""
    folder = Path(source)
    return sum(p.stat().st_size for p in folder.glob("*.safetensors")) if folder.is_dir() else 0
