"""Next-token cross-entropy of a micro-batch, without its full-vocabulary logits.

The plain way, `model(...).logits` then cross-entropy, holds batch x length x vocabulary logits in
fp32 and then their gradient: for a 49k-token vocabulary at batch 4 x 512 tokens that is 800 MB,
more than all the other activations of a 135M model. Here the lm_head projection and the loss run
on the positions that carry a target only (the others add nothing to the loss or the gradients),
in chunks of a bounded number of tokens, each under non-reentrant activation checkpointing: a
chunk's logits live during its forward and are recomputed in backward, so at most one chunk's
logits exist at a time. Liger's fused linear cross-entropy and torchtune's chunked loss do the
same; liger-kernel is Triton, which runs on GPUs only, so this is plain torch and runs everywhere.

The loss is computed inside the model's forward, by a pre-hook on the output layer that takes its
input (the last hidden states), computes the loss, and hands the layer an empty slice. So the
model is still called through whatever wraps it (DDP, whose gradient sync needs the forward to go
through it; PEFT; Accelerate's autocast), and the weights it shares, such as tied embeddings, get
one gradient each as usual.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from workers.training.data import IGNORE_INDEX

CHUNK_BYTES = 128 * 2**20  # fp32 logits of one chunk


@dataclass
class LossSums:
    loss: torch.Tensor  # summed cross-entropy over the targets; carries the gradient
    correct: torch.Tensor  # targets whose argmax prediction is right
    targets: torch.Tensor


class OutputLayerTap:
    """Computes from the output layer's input, in its forward pre-hook (`_in_forward`), when
    `chunked`: an output layer that is not a plain Linear (LoRA on lm_head) cannot be, and FSDP's
    sharded weights are only whole inside their own module's forward, so those compute the plain way
    from the whole logits."""

    def __init__(self, model, device, *, chunked: bool = True, chunk_tokens: int | None = None):
        self.device = device
        head = model.get_output_embeddings()
        self.chunked = chunked and type(head) is torch.nn.Linear
        self.chunk_tokens = chunk_tokens or max(1, CHUNK_BYTES // (4 * head.out_features))
        self._head = head
        self._hook = head.register_forward_pre_hook(self._in_forward) if self.chunked else None

    def _in_forward(self, head, args):
        raise NotImplementedError

    def remove(self) -> None:
        """Takes the pre-hook off the output layer: for a tap made for one call."""
        if self._hook is not None:
            self._hook.remove()

    def over_chunks(self, function, hidden: torch.Tensor, labels: torch.Tensor) -> list:
        """`function(hidden, weight, bias, labels)` of each chunk of at most chunk_tokens positions,
        under non-reentrant checkpointing when gradients are on. At least one (maybe empty) chunk: a
        micro-batch without targets still puts the output layer in the graph, or DDP would wait
        for its gradient from this process."""
        weight, bias = self._head.weight, self._head.bias
        results = []
        for start in range(0, max(len(labels), 1), self.chunk_tokens):
            piece = (hidden[start : start + self.chunk_tokens], weight, bias, labels[start : start + self.chunk_tokens])
            results.append(
                checkpoint(function, *piece, use_reentrant=False) if torch.is_grad_enabled() else function(*piece)
            )
        return results

    def token_logps(self, hidden: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """log p(label) of each position of `hidden` [tokens, hidden size], in fp32, chunked; under
        logits / `temperature` (the distribution answers were sampled from) where it is not 1."""
        return torch.cat(self.over_chunks(partial(_chunk_logps, temperature=temperature), hidden, labels))


class CausalLMLoss(OutputLayerTap):
    """`loss(model, batch)`: the sums of one micro-batch, chunked or plain (OutputLayerTap)."""

    def __init__(self, model, device, *, chunked: bool = True, chunk_tokens: int | None = None):
        super().__init__(model, device, chunked=chunked, chunk_tokens=chunk_tokens)
        self._labels: torch.Tensor | None = None
        self._sums: LossSums | None = None

    def __call__(self, model, batch: dict) -> LossSums:
        inputs = {key: value.to(self.device) for key, value in batch.items() if key != "labels"}
        # shift the labels, not the logits: slicing the logits would copy the largest tensor of the step
        labels = F.pad(batch["labels"], (0, 1), value=IGNORE_INDEX)[:, 1:].to(self.device)
        if not self.chunked:
            # no KV cache: with one, transformers would not build the packed block-diagonal mask
            return _plain_sums(model(**inputs, use_cache=False).logits, labels)
        self._labels = labels
        try:
            model(**inputs, use_cache=False)
            sums = self._sums
        finally:
            self._labels, self._sums = None, None
        return sums

    def _in_forward(self, head, args):
        if self._labels is None:  # a call that wants logits (generation, an outside caller)
            return None
        hidden = args[0]
        mask = self._labels != IGNORE_INDEX
        self._sums = self._chunked_sums(hidden[mask], self._labels[mask])
        return (hidden[..., :0, :],)

    def _chunked_sums(self, hidden: torch.Tensor, labels: torch.Tensor) -> LossSums:
        loss = hidden.new_zeros((), dtype=torch.float32)
        correct = torch.zeros((), device=hidden.device)
        for chunk_loss, chunk_correct in self.over_chunks(_chunk_sums, hidden, labels):
            loss = loss + chunk_loss
            correct += chunk_correct
        return LossSums(loss, correct, torch.tensor(float(len(labels)), device=hidden.device))


def _chunk_sums(hidden, weight, bias, labels) -> tuple[torch.Tensor, torch.Tensor]:
    logits = F.linear(hidden, weight, bias).float()
    loss = F.cross_entropy(logits, labels, reduction="sum")
    correct = (logits.detach().argmax(-1) == labels).sum().float()
    return loss, correct


def _chunk_logps(hidden, weight, bias, labels, temperature: float) -> torch.Tensor:
    logits = F.linear(hidden, weight, bias).float()
    if temperature != 1.0:
        logits = logits / temperature
    return -F.cross_entropy(logits, labels, reduction="none")


def _plain_sums(logits: torch.Tensor, labels: torch.Tensor) -> LossSums:
    loss = F.cross_entropy(
        logits.float().view(-1, logits.size(-1)), labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    mask = labels != IGNORE_INDEX
    correct = (logits.detach()[mask].argmax(-1) == labels[mask]).sum().float()
    return LossSums(loss, correct, mask.sum().float())
