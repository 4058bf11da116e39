"""Which activations a training step keeps for its backward pass and which it recomputes.

- "selective" (the default): each decoder layer keeps only the outputs of its matrix products and
  of attention, the costly ops, and recomputes the cheap rest in backward (norms, rotary
  embeddings, activation functions, element-wise products, repeated key/value heads, mask
  conversions). It is torch's selective activation checkpointing with torchtitan's op policy. The
  numbers are the same (recomputing runs the same kernels on the same inputs). On SmolLM2-135M a
  step peaked 1.6 GB lower and ran no slower; on a tiny model (hidden 256) the recomputed
  element-wise ops weigh more against the matrix products and cost about a tenth of a step
  (docs/benchmarks.md).
- "full": each layer keeps only its input and recomputes its whole forward in backward: the least
  memory, one more forward pass of the layers.
- "off": everything is kept, as transformers.Trainer does by default.
"""

from __future__ import annotations

import functools
import logging

from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

from workers.models.errors import InvalidHyperparametersError

log = logging.getLogger(__name__)

# matrix products, and every attention kernel torch or flash-attn may run (CPU, CUDA flash,
# memory-efficient, cuDNN, flash-attn 2's own ops): matched by name, since the GPU ones are not
# registered on a CPU-only install
_KEPT_OPS = frozenset(
    {
        "aten::mm",
        "aten::addmm",
        "aten::bmm",
        "aten::baddbmm",
        "aten::_scaled_dot_product_flash_attention_for_cpu",
        "aten::_scaled_dot_product_flash_attention",
        "aten::_scaled_dot_product_efficient_attention",
        "aten::_scaled_dot_product_cudnn_attention",
        "flash_attn::_flash_attn_forward",
        "flash_attn::_flash_attn_varlen_forward",
    }
)


def _keep_costly_outputs(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    return CheckpointPolicy.MUST_SAVE if op.name() in _KEPT_OPS else CheckpointPolicy.PREFER_RECOMPUTE


def enable(model, mode: str, name: str) -> None:
    """Turn on `mode` ("selective", "full" or "off") for a transformers model. A model without
    checkpointing support trains with "selective" as with "off" (logged); "full" is refused there."""
    if mode == "off":
        return
    if not model.supports_gradient_checkpointing:
        if mode == "full":
            raise InvalidHyperparametersError(
                f"model {name!r} does not support activation checkpointing; set "
                'training.gradient_checkpointing to "off"',
                param="training.gradient_checkpointing",
            )
        log.info("%s has no activation checkpointing: every activation is kept", type(model).__name__)
        return
    kwargs = {"use_reentrant": False}
    if mode == "selective":
        kwargs["context_fn"] = functools.partial(create_selective_checkpoint_contexts, _keep_costly_outputs)
    model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
