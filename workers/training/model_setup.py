"""The model a run trains: the base in fp32 master weights (or its newest checkpoint), or for QLoRA
(`training.lora.quantize`) in 4-bit NF4 on the GPU; activation checkpointing, and LoRA wrapping."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM
from transformers.pytorch_utils import Conv1D

from lmtune.problems import quote_names
from lmtune.spec import LoraOptions, TrainingOptions
from workers.models.errors import InvalidHyperparametersError, ModelLoadError
from workers.models.loading import cannot_load
from workers.training import activation_checkpointing
from workers.training.errors import QuantizationUnavailableError

LORA_LAYERS = (torch.nn.Linear, torch.nn.Embedding, Conv1D)  # what a LoRA target may name


def load_model(source: str, training: TrainingOptions, resume_from: Path | None = None, name: str | None = None):
    """The model to train, in fp32 master weights; from `resume_from` when a checkpoint is given."""
    name = name or source
    start = resume_from if resume_from is not None and training.lora is None else source
    quantized = _quantization(training)
    try:
        model = AutoModelForCausalLM.from_pretrained(start, dtype=torch.float32, **quantized)
    except (OSError, ValueError) as error:
        raise ModelLoadError(cannot_load(str(start), name, error), param="model") from None
    if quantized:
        from peft import prepare_model_for_kbit_training

        # norms and embeddings to fp32; activation checkpointing is ours, set below as for any run
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    # saved configs and LoRA adapters (adapter_config.json) record the base model by this: as other
    # servers (vLLM, PEFT) know it, its hub id; a local model by its name, never a server folder
    model.config._name_or_path = model.name_or_path = source if is_hub_id(source) else name
    activation_checkpointing.enable(model, training.gradient_checkpointing, name)
    model.config.use_cache = False
    if training.lora is not None:
        model = _with_lora(model, training, resume_from, name)
    return model


def require_quantization(training: TrainingOptions) -> None:
    """A 4-bit base needs a CUDA GPU and bitsandbytes on this worker; checked before any work."""
    if training.lora is None or not training.lora.quantize:
        return
    missing = []
    if not torch.cuda.is_available():
        missing.append("a CUDA GPU (this worker's torch sees none)")
    if importlib.util.find_spec("bitsandbytes") is None:
        missing.append("bitsandbytes (pip install bitsandbytes)")
    if missing:
        raise QuantizationUnavailableError(
            f"training.lora.quantize: a 4-bit base needs {' and '.join(missing)}; run the job on a GPU queue "
            "whose workers have both, or remove quantize to train plain LoRA",
            param="training.lora.quantize",
        )


def _quantization(training: TrainingOptions) -> dict:
    """from_pretrained's arguments for QLoRA's base: NF4 with double quantisation (the QLoRA paper's),
    computed in bf16 (fp16 where the GPU has no bf16), on this process's GPU."""
    if training.lora is None or not training.lora.quantize:
        return {}
    from transformers import BitsAndBytesConfig

    compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    config = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute
    )
    return {"quantization_config": config, "device_map": {"": int(os.environ.get("LOCAL_RANK", "0"))}}


def mergeable_copy(model, source: str, training: TrainingOptions, name: str, state_dict: dict | None = None):
    """The trained LoRA adapter on a plain fp32 base on the CPU, for the final model's merge: a 4-bit
    base de-quantised (the weights the adapter was trained against), a sharded one gathered
    (`state_dict`, on the main process). A plain model in one piece is merged as it is."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict
    from peft.utils.integrations import dequantize_bnb_weight, get_bnb_param_type

    plain_training = training.model_copy(
        update={"lora": training.lora.model_copy(update={"quantize": None}), "gradient_checkpointing": "off"}
    )
    plain = load_model(source, plain_training, name=name)
    plain_weights = dict(plain.named_parameters())
    with torch.no_grad():
        for path, parameter in model.named_parameters():
            if get_bnb_param_type(parameter) == "4bit":
                plain_weights[path].copy_(dequantize_bnb_weight(parameter).to("cpu", torch.float32))
    set_peft_model_state_dict(plain, get_peft_model_state_dict(model, state_dict=state_dict))
    return plain


def is_hub_id(source: str) -> bool:
    return not Path(source).exists() and source.count("/") == 1 and not source.startswith((".", "/", "~"))


def _with_lora(model, training: TrainingOptions, resume_from: Path | None, name: str):
    from peft import PeftModel, get_peft_model

    if training.gradient_checkpointing != "off":
        model.enable_input_require_grads()  # checkpointed blocks need an input that carries grad
    if resume_from is not None:
        return PeftModel.from_pretrained(model, resume_from, is_trainable=True)
    lora = training.lora
    if lora.target_modules != "all-linear":
        check_target_modules(model, lora.target_modules, name)
    try:
        return get_peft_model(model, lora_config(lora))
    except ValueError as error:  # a target peft cannot wrap
        raise InvalidHyperparametersError(
            f"training.lora: {str(error)[:300]}", param="training.lora.target_modules"
        ) from None


def check_target_modules(model, targets: list[str], name: str) -> None:
    """Each target must name (as peft matches it: the whole name or its last parts) a layer LoRA
    can wrap; otherwise the job fails listing the model's linear layers."""
    layers = [path for path, module in model.named_modules() if isinstance(module, LORA_LAYERS)]
    unmatched = [t for t in targets if not any(path == t or path.endswith("." + t) for path in layers)]
    if unmatched:
        linear = sorted(
            {path.rsplit(".", 1)[-1] for path, m in model.named_modules() if isinstance(m, (torch.nn.Linear, Conv1D))}
        )
        raise InvalidHyperparametersError(
            f"training.lora.target_modules: {quote_names(unmatched)} match no layer of model {name!r}; "
            f"its linear layers are {', '.join(linear)}",
            param="training.lora.target_modules",
        )


def lora_config(lora: LoraOptions):
    """PEFT's LoraConfig of a job's LoRA options."""
    from peft import LoraConfig

    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )
