"""Loading the base model and tokenizer (hub id or local folder), LoRA wrapping, and saving."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lmtune.spec import TrainingSettings
from workers.training.errors import ModelLoadError

ADAPTER_DIR = "adapter"


def load_tokenizer(name_or_path: str):
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as error:
        raise ModelLoadError(_cannot_load(name_or_path, error)) from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # padding is masked out, any id will do
    return tokenizer


def load_model(name_or_path: str, settings: TrainingSettings, resume_from: Path | None = None):
    """The model to train, in fp32 master weights; from `resume_from` when a checkpoint is given."""
    start = resume_from if resume_from is not None and settings.lora is None else name_or_path
    try:
        model = AutoModelForCausalLM.from_pretrained(start, dtype=torch.float32)
    except (OSError, ValueError) as error:
        raise ModelLoadError(_cannot_load(str(start), error)) from None
    if settings.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    if settings.lora is not None:
        model = _with_lora(model, settings, resume_from)
    return model


def _with_lora(model, settings: TrainingSettings, resume_from: Path | None):
    from peft import LoraConfig, PeftModel, get_peft_model

    if settings.gradient_checkpointing:
        model.enable_input_require_grads()  # checkpointed blocks need an input that carries grad
    if resume_from is not None:
        return PeftModel.from_pretrained(model, resume_from, is_trainable=True)
    lora = settings.lora
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def is_lora(model) -> bool:
    return hasattr(model, "peft_config")


def save_model(model, tokenizer, folder: Path, state_dict: dict | None = None) -> None:
    """The model (or, for LoRA, the adapter) in Hugging Face format with its tokenizer."""
    model.save_pretrained(folder, state_dict=state_dict)
    tokenizer.save_pretrained(folder)


def save_final(model, tokenizer, folder: Path, state_dict: dict | None = None) -> None:
    """Full fine-tuning: the model. LoRA: the adapter in `adapter/` and the merged model beside it."""
    if is_lora(model):
        save_model(model, tokenizer, folder / ADAPTER_DIR)
        # merge a copy, so the trained PEFT model in memory stays as it was
        save_model(copy.deepcopy(model).merge_and_unload(), tokenizer, folder)
    else:
        save_model(model, tokenizer, folder, state_dict=state_dict)


def _cannot_load(name: str, error: Exception) -> str:
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return (
        f"cannot load model {name!r}: {reason}. Give a local folder in Hugging Face format or a hub id "
        "that this machine can reach (set HF_HUB_OFFLINE=1 to use only the local cache)"
    )
