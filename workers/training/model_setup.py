"""The model a run trains: the base in fp32 master weights (or its newest checkpoint), activation
checkpointing, and LoRA wrapping."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM
from transformers.pytorch_utils import Conv1D

from lmtune.problems import quote_names
from lmtune.spec import LoraSettings, TrainingSettings
from workers.models.errors import InvalidSettingsError, ModelLoadError
from workers.models.loading import cannot_load
from workers.training import activation_checkpointing

LORA_LAYERS = (torch.nn.Linear, torch.nn.Embedding, Conv1D)  # what a LoRA target may name


def load_model(source: str, settings: TrainingSettings, resume_from: Path | None = None, name: str | None = None):
    """The model to train, in fp32 master weights; from `resume_from` when a checkpoint is given."""
    name = name or source
    start = resume_from if resume_from is not None and settings.lora is None else source
    try:
        model = AutoModelForCausalLM.from_pretrained(start, dtype=torch.float32)
    except (OSError, ValueError) as error:
        raise ModelLoadError(cannot_load(str(start), name, error), param="model") from None
    # saved configs and LoRA adapters (adapter_config.json) record the base model by this: as other
    # servers (vLLM, PEFT) know it, its hub id; a local model by its name, never a server folder
    model.config._name_or_path = model.name_or_path = source if is_hub_id(source) else name
    activation_checkpointing.enable(model, settings.gradient_checkpointing, name)
    model.config.use_cache = False
    if settings.lora is not None:
        model = _with_lora(model, settings, resume_from, name)
    return model


def is_hub_id(source: str) -> bool:
    return not Path(source).exists() and source.count("/") == 1 and not source.startswith((".", "/", "~"))


def _with_lora(model, settings: TrainingSettings, resume_from: Path | None, name: str):
    from peft import PeftModel, get_peft_model

    if settings.gradient_checkpointing != "off":
        model.enable_input_require_grads()  # checkpointed blocks need an input that carries grad
    if resume_from is not None:
        return PeftModel.from_pretrained(model, resume_from, is_trainable=True)
    lora = settings.lora
    if lora.target_modules != "all-linear":
        check_target_modules(model, lora.target_modules, name)
    try:
        return get_peft_model(model, lora_config(lora))
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


def lora_config(lora: LoraSettings):
    """PEFT's LoraConfig of a job's LoRA settings."""
    from peft import LoraConfig

    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )
