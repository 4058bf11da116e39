"""Loading the base model and tokenizer (hub id or local folder), LoRA wrapping, and saving.

`source` is where the weights are (a hub id or the worker's local folder); `name` is what the user
called the model (a catalogue name): every message and every saved file names the model by `name`.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from transformers.pytorch_utils import Conv1D

from lmtune.problems import quote_names, replace_paths
from lmtune.spec import TrainingSettings
from workers.training import activation_checkpointing
from workers.training.errors import InvalidSettingsError, ModelLoadError

ADAPTER_DIR = "adapter"
LORA_LAYERS = (torch.nn.Linear, torch.nn.Embedding, Conv1D)  # what a LoRA target may name


def load_tokenizer(source: str, name: str | None = None):
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise ModelLoadError(_cannot_load(source, name or source, error), param="model") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # padding is masked out, any id will do
    return tokenizer


def check_context_length(source: str, name: str, max_seq_length: int) -> None:
    """A max_seq_length past the model's context fails now, not as a shape error mid-run."""
    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise ModelLoadError(_cannot_load(source, name, error), param="model") from None
    context = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if context and max_seq_length > context:
        raise InvalidSettingsError(
            f"training.max_seq_length is {max_seq_length:,}, more than the {context:,} tokens model {name!r} can take "
            f"(its max_position_embeddings); use at most {context:,}",
            param="training.max_seq_length",
        )


def load_model(source: str, settings: TrainingSettings, resume_from: Path | None = None, name: str | None = None):
    """The model to train, in fp32 master weights; from `resume_from` when a checkpoint is given."""
    name = name or source
    start = resume_from if resume_from is not None and settings.lora is None else source
    try:
        model = AutoModelForCausalLM.from_pretrained(start, dtype=torch.float32)
    except (OSError, ValueError) as error:
        raise ModelLoadError(_cannot_load(str(start), name, error), param="model") from None
    # saved configs and LoRA adapters record the base model by this: its name, not a server folder
    model.config._name_or_path = model.name_or_path = name
    activation_checkpointing.enable(model, settings.gradient_checkpointing, name)
    model.config.use_cache = False
    if settings.lora is not None:
        model = _with_lora(model, settings, resume_from, name)
    return model


def _with_lora(model, settings: TrainingSettings, resume_from: Path | None, name: str):
    from peft import LoraConfig, PeftModel, get_peft_model

    if settings.gradient_checkpointing != "off":
        model.enable_input_require_grads()  # checkpointed blocks need an input that carries grad
    if resume_from is not None:
        return PeftModel.from_pretrained(model, resume_from, is_trainable=True)
    lora = settings.lora
    if lora.target_modules != "all-linear":
        check_target_modules(model, lora.target_modules, name)
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(model, config)
    except ValueError as error:  # a target peft cannot wrap
        raise InvalidSettingsError(f"training.lora: {str(error)[:300]}", param="training.lora.target_modules") from None


def check_target_modules(model, targets: list[str], name: str) -> None:
    """Each target must name (as peft matches it: the whole name or its last parts) a layer LoRA
    can wrap; otherwise the job fails listing the model's linear layers."""
    layers = [path for path, module in model.named_modules() if isinstance(module, LORA_LAYERS)]
    unmatched = [t for t in targets if not any(path == t or path.endswith("." + t) for path in layers)]
    if unmatched:
        linear = sorted(
            {path.rsplit(".", 1)[-1] for path, m in model.named_modules() if isinstance(m, (torch.nn.Linear, Conv1D))}
        )
        raise InvalidSettingsError(
            f"training.lora.target_modules: {quote_names(unmatched)} match no layer of model {name!r}; "
            f"its linear layers are {', '.join(linear)}",
            param="training.lora.target_modules",
        )


def is_lora(model) -> bool:
    return hasattr(model, "peft_config")


def save_model(model, tokenizer, folder: Path, state_dict: dict | None = None) -> None:
    """The model (or, for LoRA, the adapter) in Hugging Face format with its tokenizer."""
    # the vocabulary is never resized, so an adapter never needs the embeddings; peft's "auto" would
    # look the base model up by its name, on the hub
    extra = {"save_embedding_layers": False} if is_lora(model) else {}
    model.save_pretrained(folder, state_dict=state_dict, **extra)
    tokenizer.save_pretrained(folder)


def save_final(model, tokenizer, folder: Path, state_dict: dict | None = None) -> None:
    """Full fine-tuning: the model. LoRA: the adapter in `adapter/` and the merged model beside it."""
    if is_lora(model):
        save_model(model, tokenizer, folder / ADAPTER_DIR)
        # merge a copy, so the trained PEFT model in memory stays as it was
        save_model(copy.deepcopy(model).merge_and_unload(), tokenizer, folder)
    else:
        save_model(model, tokenizer, folder, state_dict=state_dict)


def _cannot_load(source: str, name: str, error: Exception) -> str:
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return (
        f"cannot load model {name!r}: {replace_paths(reason, {source: name})[:300]}. Give a local folder in Hugging "
        "Face format or a hub id that this machine can reach (set HF_HUB_OFFLINE=1 to use only the local cache)"
    )
