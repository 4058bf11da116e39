"""Loading a model's tokenizer and config (hub id or local folder), and saving a model.

`source` is where the weights are (a hub id or the worker's local folder); `name` is what the user
called the model (a catalogue name): every message and every saved file names the model by `name`.
"""

from __future__ import annotations

import copy
from pathlib import Path

from transformers import AutoConfig, AutoTokenizer

from lmtune.layout import ADAPTER_DIR
from lmtune.problems import replace_paths
from workers.models.chat_format import tool_format_of
from workers.models.errors import InvalidHyperparametersError, ModelLoadError


def load_tokenizer(source: str, name: str | None = None):
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise ModelLoadError(cannot_load(source, name or source, error), param="model") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # padding is masked out, any id will do
    return tokenizer


def check_context_length(source: str, name: str, max_seq_length: int) -> int | None:
    """A max_seq_length past the model's context fails now, not as a shape error mid-run. Returns
    the context (None when the model's config does not say)."""
    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise ModelLoadError(cannot_load(source, name, error), param="model") from None
    context = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if context and max_seq_length > context:
        raise InvalidHyperparametersError(
            f"training.max_seq_length is {max_seq_length:,}, more than the {context:,} tokens model {name!r} can take "
            f"(its max_position_embeddings); use at most {context:,}",
            param="training.max_seq_length",
        )
    return context


def is_lora(model) -> bool:
    return hasattr(model, "peft_config")


def save_model(model, tokenizer, folder: Path, state_dict: dict | None = None) -> None:
    """The model (or, for LoRA, the adapter) in Hugging Face format with its tokenizer, and the format
    its tool calls were trained in (workers/models/tool_format.py), which serving answers in."""
    # the vocabulary is never resized, so an adapter never needs the embeddings; peft's "auto" would
    # look the base model up by its name, on the hub
    extra = {"save_embedding_layers": False} if is_lora(model) else {}
    model.save_pretrained(folder, state_dict=state_dict, **extra)
    tokenizer.save_pretrained(folder)
    tool_format_of(tokenizer).save(folder)


def save_final(model, tokenizer, folder: Path, state_dict: dict | None = None) -> None:
    """Full fine-tuning: the model. LoRA: the adapter in `adapter/` and the merged model beside it."""
    if is_lora(model):
        save_model(model, tokenizer, folder / ADAPTER_DIR)
        # merge a copy, so the trained PEFT model in memory stays as it was
        save_model(copy.deepcopy(model).merge_and_unload(), tokenizer, folder)
    else:
        save_model(model, tokenizer, folder, state_dict=state_dict)


def cannot_load(source: str, name: str, error: Exception) -> str:
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return (
        f"cannot load model {name!r}: {replace_paths(reason, {source: name})[:300]}. Give a local folder in Hugging "
        "Face format or a hub id that this machine can reach (set HF_HUB_OFFLINE=1 to use only the local cache)"
    )
