"""GRPO's arithmetic (group-relative policy optimisation, DeepSeekMath; the variants as TRL's
GRPOTrainer names them): the advantages of a group of answers, the answers' per-token
log-probabilities (taken at the model's output layer in chunks of tokens, as the supervised loss's),
and the clipped policy-ratio loss with its optional KL term.

tests/workers/training/test_grpo_loss.py checks loss and gradients against TRL's own GRPOTrainer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from accelerate.utils import extract_model_from_parallel

from workers.training.loss import OutputLayerTap

# added to the spread before dividing by it: a group whose answers all scored the same has no spread
# (and no advantage); TRL's value
STD_EPSILON = 1e-4

LossType = Literal["dapo", "grpo", "bnpo", "dr_grpo"]
ScaleRewards = Literal["group", "batch", "none"]


def group_advantages(
    rewards: torch.Tensor,
    group_size: int,
    scale: ScaleRewards = "group",
    batch_std: Callable[[torch.Tensor], torch.Tensor] = torch.std,
) -> torch.Tensor:
    """Each answer's reward minus its group's mean (answers of one prompt are consecutive), divided
    by the spread (the unbiased std) of its group, of the whole batch (`batch_std`: over every
    process's answers in training), or not at all."""
    groups = rewards.view(-1, group_size)
    advantages = (groups - groups.mean(dim=1, keepdim=True)).reshape(-1)
    if scale == "group":
        return advantages / (groups.std(dim=1).repeat_interleave(group_size) + STD_EPSILON)
    if scale == "batch":
        return advantages / (float(batch_std(rewards)) + STD_EPSILON)
    return advantages


def answer_logps(
    model,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    answer_ids: torch.Tensor,
    temperature: float = 1.0,
    answer_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """log p of each answer token given its prompt, in fp32: prompts left-padded, answers right-padded
    ([batch, answer length]; a padded position's value is meaningless, the answer mask drops it;
    with `answer_mask` it is 0 and not computed). `model` as prepared (DDP) or bare.
    Positions count from each row's first real token, as in generation."""
    tap = AnswerLogProbs(extract_model_from_parallel(model))
    try:
        return tap(model, prompt_ids, prompt_mask, answer_ids, temperature, answer_mask)
    finally:
        tap.remove()


class AnswerLogProbs(OutputLayerTap):
    """The answers' log-probabilities from the output layer's input, in chunks of answer tokens
    (workers/training/loss.py, as the supervised loss and DPO): the fp32 [answer tokens x vocabulary]
    logits of a micro-batch never exist at once, in the forward or in the backward."""

    def __init__(self, model, *, chunk_tokens: int | None = None):
        super().__init__(model, None, chunk_tokens=chunk_tokens)
        self._answers: torch.Tensor | None = None
        self._mask: torch.Tensor | None = None
        self._temperature = 1.0
        self._logps: torch.Tensor | None = None

    def __call__(self, model, prompt_ids, prompt_mask, answer_ids, temperature=1.0, answer_mask=None) -> torch.Tensor:
        ids = torch.cat([prompt_ids, answer_ids], dim=1)
        mask = torch.cat([prompt_mask, torch.ones_like(answer_ids)], dim=1)
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        keep = answer_ids.size(1)
        # the last prompt token and every answer token but the last: each predicts the next
        inputs = {"input_ids": ids, "attention_mask": mask, "position_ids": positions, "logits_to_keep": keep + 1}
        if not self.chunked:  # an output layer the tap cannot project itself (LoRA on lm_head): whole logits
            return token_logps(model(**inputs, use_cache=False).logits[:, :-1], answer_ids, temperature)
        self._answers, self._temperature = answer_ids, temperature
        self._mask = torch.ones_like(answer_ids, dtype=torch.bool) if answer_mask is None else answer_mask.bool()
        try:
            model(**inputs, use_cache=False)
            return self._logps
        finally:
            self._answers, self._mask, self._logps = None, None, None

    def _in_forward(self, head, args):
        if self._answers is None:  # a call that wants logits (generation)
            return None
        hidden = args[0]  # [batch, answer length + 1, hidden size]: logits_to_keep's positions
        values = self.token_logps(hidden[:, :-1][self._mask], self._answers[self._mask], self._temperature)
        # scattered into place: the padded positions stay 0 (and, with no answer token, still in the graph)
        self._logps = values.new_zeros(self._answers.shape).masked_scatter(self._mask, values)
        return (hidden[..., :0, :],)


def token_logps(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log p(token) under the sampling distribution (logits / temperature, as the answers were
    drawn), in fp32; `logits` [batch, length, vocabulary] predict `tokens` [batch, length]. One row at
    a time: the fp32 log-softmax of a whole batch would be the largest tensor of the step."""
    rows = []
    for row_logits, row_tokens in zip(logits, tokens):
        scaled = row_logits.float() / temperature
        picked = scaled.gather(-1, row_tokens.unsqueeze(-1)).squeeze(-1)
        rows.append(picked - torch.logsumexp(scaled, dim=-1))
    return torch.stack(rows)


@dataclass(frozen=True)
class LossOptions:
    epsilon: float = 0.2
    epsilon_high: float | None = None  # default: epsilon
    beta: float = 0.0
    loss_type: LossType = "dapo"
    max_completion_tokens: int = 128  # dr_grpo's constant normaliser


@dataclass
class PolicyLoss:
    """A micro-batch's loss as a sum over its units (answer tokens for dapo, answers for the other
    types): divided by the units of the whole optimizer step (every micro-batch of every process),
    it is the loss TRL's GRPOTrainer optimises. The statistics are sums over answer tokens."""

    loss: torch.Tensor  # carries the gradient
    units: int
    kl: torch.Tensor  # sum of the per-token KL to the reference (0 without a KL term)
    clipped: torch.Tensor  # tokens whose ratio was clipped
    tokens: int  # answer tokens


def units(loss_type: LossType, mask: torch.Tensor) -> int:
    """What a micro-batch's loss is a sum over: its answer tokens (dapo), or its answers."""
    return int(mask.sum()) if loss_type == "dapo" else mask.size(0)


def policy_loss(
    logps: torch.Tensor,
    mask: torch.Tensor,
    advantages: torch.Tensor,
    options: LossOptions,
    *,
    old_logps: torch.Tensor | None = None,
    ref_logps: torch.Tensor | None = None,
) -> PolicyLoss:
    """The loss of one micro-batch of answers: -min(r A, clip(r, 1-eps, 1+eps_high) A) per token,
    r = p / p_old (p_old: the policy that sampled them; by default this very one, so r = 1 and the
    gradient is the plain policy gradient), plus beta x r x KL(p || p_ref) by the k3 estimator
    exp(ref - logp) - (ref - logp) - 1; summed as `loss_type` weighs tokens:
      dapo     every token of the step alike: the sum of the token losses
      grpo     every answer alike, whatever its length: the sum of each answer's mean token loss
      bnpo     every token of the micro-batch alike: its mean token loss times its answers
      dr_grpo  no length bias: the sum of the token losses over max_completion_tokens
    (grpo, bnpo and dr_grpo as TRL's are, over micro-batches of equal size)."""
    mask = mask.to(logps.dtype)
    old = logps.detach() if old_logps is None else old_logps
    ratio = torch.exp(logps - old)
    epsilon_high = options.epsilon if options.epsilon_high is None else options.epsilon_high
    clipped_ratio = torch.clamp(ratio, 1 - options.epsilon, 1 + epsilon_high)
    gain = advantages.unsqueeze(1)
    per_token = -torch.min(ratio * gain, clipped_ratio * gain)
    kl = torch.zeros_like(per_token)
    if options.beta != 0.0:
        if ref_logps is None:
            raise ValueError("a KL term (beta > 0) needs the reference model's log-probabilities")
        kl = torch.exp(ref_logps - logps) - (ref_logps - logps) - 1
        # weighted by the ratio (TRL's use_bias_correction_kl, its default): the KL gradient becomes the
        # unbiased reverse-KL gradient (DeepSeek-V3.2); the ratio is 1 on-policy but still differentiable
        kl = kl * ratio
        per_token = per_token + options.beta * kl
    was_clipped = ((ratio < 1 - options.epsilon) & (gain < 0)) | ((ratio > 1 + epsilon_high) & (gain > 0))
    return PolicyLoss(
        loss=_summed(per_token * mask, mask, options),
        units=units(options.loss_type, mask),
        kl=(kl.detach() * mask).sum(),
        clipped=(was_clipped.to(mask.dtype) * mask).sum(),
        tokens=int(mask.sum()),
    )


def _summed(losses: torch.Tensor, mask: torch.Tensor, options: LossOptions) -> torch.Tensor:
    if options.loss_type == "dapo":
        return losses.sum()
    if options.loss_type == "grpo":
        return (losses.sum(-1) / mask.sum(-1).clamp(min=1.0)).sum()
    if options.loss_type == "bnpo":
        return losses.sum() / mask.sum().clamp(min=1.0) * mask.size(0)
    return losses.sum() / options.max_completion_tokens  # dr_grpo
