"""Direct Preference Optimization's numbers: each completion's log-probability, and the sigmoid loss.

A pair is a prompt with a preferred (chosen) and a non-preferred (rejected) completion. DPO's loss
for a pair is -log sigmoid(beta * ((chosen - ref_chosen) - (rejected - ref_rejected))), where each
term is the sum of the completion's token log-probabilities under the model being trained or under
the reference (the starting model); beta * (logp - ref_logp) is that completion's "reward". At the
first step the model is the reference, so every pair's loss is ln 2.

The log-probabilities are taken as workers/training/loss.py takes the supervised loss: in a pre-hook
of the output layer, on the positions that carry a target only, in chunks of a bounded number of
tokens under activation checkpointing, so no full-vocabulary logits tensor of the batch ever exists.
A token's log-probability goes to its sequence's sum through `sequence_index` (a packed row holds
several sequences; a padded row one).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from workers.training.data import IGNORE_INDEX
from workers.training.loss import OutputLayerTap


@dataclass
class DpoSums:
    """Sums over the pairs of a micro-batch; the step divides them by its pairs."""

    loss: torch.Tensor  # carries the gradient
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor
    correct: torch.Tensor  # pairs whose chosen reward is above the rejected one
    pairs: int


def dpo_sums(
    chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor, beta: float
) -> DpoSums:
    """The sigmoid DPO loss of each pair (summed log-probabilities in, one per pair), summed."""
    chosen_rewards = beta * (chosen - ref_chosen)
    rejected_rewards = beta * (rejected - ref_rejected)
    losses = -F.logsigmoid(chosen_rewards - rejected_rewards)
    return DpoSums(
        losses.sum(),
        chosen_rewards.detach().sum(),
        rejected_rewards.detach().sum(),
        (chosen_rewards > rejected_rewards).float().sum().detach(),
        len(losses),
    )


class SequenceLogProbs(OutputLayerTap):
    """`logps(model, batch)`: the summed log-probability of each sequence's labelled tokens, one value
    per sequence (batch["sequences"] of them), chunked or plain (OutputLayerTap). The model is called
    through whatever wraps it (DDP, PEFT, autocast)."""

    def __init__(self, model, device, *, chunked: bool = True, chunk_tokens: int | None = None):
        super().__init__(model, device, chunked=chunked, chunk_tokens=chunk_tokens)
        self._labels: torch.Tensor | None = None
        self._token_logps: torch.Tensor | None = None

    def __call__(self, model, batch: dict) -> torch.Tensor:
        inputs = {key: value.to(self.device) for key, value in batch.items() if key in MODEL_INPUTS}
        # shift the labels (and which sequence each belongs to), not the logits
        labels = F.pad(batch["labels"], (0, 1), value=IGNORE_INDEX)[:, 1:].to(self.device)
        owners = F.pad(batch["sequence_index"], (0, 1), value=-1)[:, 1:].to(self.device)
        mask = labels != IGNORE_INDEX
        if self.chunked:
            self._labels = labels
            try:
                model(**inputs, use_cache=False)
                token_logps = self._token_logps
            finally:
                self._labels, self._token_logps = None, None
        else:
            logits = model(**inputs, use_cache=False).logits
            token_logps = -F.cross_entropy(logits[mask].float(), labels[mask], reduction="none")
        sums = torch.zeros(batch["sequences"], device=token_logps.device, dtype=torch.float32)
        return sums.index_add(0, owners[mask], token_logps)

    def _in_forward(self, head, args):
        if self._labels is None:  # a call that wants logits (generation, an outside caller)
            return None
        hidden = args[0]
        mask = self._labels != IGNORE_INDEX
        self._token_logps = self.token_logps(hidden[mask], self._labels[mask])
        return (hidden[..., :0, :],)


MODEL_INPUTS = ("input_ids", "attention_mask", "position_ids")
