"""One GRPO step's work on one process, apart from the loop that runs it: the rows' prompts
answered `group_size` times by the current policy and graded (grpo_rollouts.py), the advantages of
each group, the answers laid out as padded tensors and cut into micro-batches, each micro-batch's
loss (grpo_loss.py) against the log-probabilities of the policy that sampled them and, with a KL
term, of the starting model; and the periodic evaluation, greedy answers to validation rows graded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from lmtune.graders import Tools
from lmtune.reinforcement import GrpoOptions, ResolvedReinforcement
from workers.models.generation import GenerationParams, end_of_turn_ids, prompt_ids
from workers.training.errors import InvalidDataError
from workers.training.objectives.grpo_loss import LossOptions, PolicyLoss, answer_logps, group_advantages, policy_loss
from workers.training.objectives.grpo_rollouts import Rollouts, answer_seed, grade_rollouts, sample_groups


@dataclass
class MicroBatch:
    prompt_ids: torch.Tensor  # left-padded
    prompt_mask: torch.Tensor
    answer_ids: torch.Tensor  # right-padded
    answer_mask: torch.Tensor
    advantages: torch.Tensor
    ref_logps: torch.Tensor | None

    @property
    def tokens(self) -> int:
        return int(self.prompt_mask.sum() + self.answer_mask.sum())


@dataclass
class StepData:
    rollouts: Rollouts
    advantages: torch.Tensor
    micro_batches: list[MicroBatch]


class GrpoStep:
    """`rollout(model, step, slices)` then, per micro-batch, `loss(model, micro)`. `reduce` sums a
    tensor over every process (the batch's reward spread, for scale_rewards "batch")."""

    def __init__(
        self,
        options: GrpoOptions,
        resolved: ResolvedReinforcement,
        grader,
        tools: Tools,
        tokenizer,
        device: torch.device,
        seed: int,
        reference_model=None,
        reduce: Callable[[torch.Tensor], torch.Tensor] = lambda sums: sums,
    ):
        self.options, self.resolved, self.grader, self.tools = options, resolved, grader, tools
        self.tokenizer, self.device, self.reference_model = tokenizer, device, reference_model
        self.stop_ids = end_of_turn_ids(tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.stop_ids[0]
        self.seed, self.reduce = seed, reduce
        self.params = GenerationParams(
            max_tokens=resolved.max_completion_tokens, temperature=options.temperature, top_p=options.top_p
        )
        self.loss_options = LossOptions(
            epsilon=options.epsilon,
            epsilon_high=options.epsilon_high,
            beta=options.beta,
            loss_type=options.loss_type,
            max_completion_tokens=resolved.max_completion_tokens,
        )

    def rollout(self, model, step: int, slices: Sequence[Sequence[tuple[int, dict]]]) -> StepData:
        """The answers to every row of the step's `slices` (one per micro-batch; each row with its
        place in the training file), sampled and graded together; a micro-batch per slice. An empty
        slice (a short last batch) gets one answer that weighs nothing, so that this process still runs
        the forward its peers synchronise with."""
        group, rows = self.resolved.group_size, [row for part in slices for row in part]
        seeds = [answer_seed(self.seed, step, index, answer) for index, _ in rows for answer in range(group)]
        items = [row for _, row in rows]
        rollouts = sample_groups(model, self.tokenizer, self.prompts(items), group, self.params, seeds)
        grade_rollouts(rollouts, items, group, self.grader, self.tools)
        advantages = group_advantages(rollouts.rewards, group, self.options.scale_rewards, self._batch_std)
        batches, start = [], 0
        for part in slices:
            answers = range(start * group, (start + len(part)) * group)
            batches.append(self._micro_batch(rollouts, advantages, answers) if part else self._empty_batch())
            start += len(part)
        return StepData(rollouts, advantages, batches)

    def loss(self, model, micro: MicroBatch) -> PolicyLoss:
        """The micro-batch's loss summed over its units (grpo_loss.PolicyLoss)."""
        logps = answer_logps(
            model, micro.prompt_ids, micro.prompt_mask, micro.answer_ids, self.options.temperature, micro.answer_mask
        )
        return policy_loss(logps, micro.answer_mask, micro.advantages, self.loss_options, ref_logps=micro.ref_logps)

    @torch.no_grad()
    def evaluate(self, model, rows: Sequence[dict]) -> Rollouts:
        """Greedy answers to `rows`, graded: the mean reward a user would see from the model now."""
        greedy = GenerationParams(max_tokens=self.resolved.max_completion_tokens, temperature=0.0)
        rollouts = sample_groups(model, self.tokenizer, self.prompts(rows), 1, greedy)
        grade_rollouts(rollouts, rows, 1, self.grader, self.tools)
        return rollouts

    def _batch_std(self, rewards: torch.Tensor) -> torch.Tensor:
        """The unbiased spread of the rewards of every process's answers."""
        rewards = rewards.double().to(self.device)
        count, total, squares = self.reduce(
            torch.stack([rewards.new_tensor(len(rewards)), rewards.sum(), (rewards**2).sum()])
        ).tolist()
        mean = total / max(count, 1.0)
        return torch.tensor(max(squares - count * mean**2, 0.0) / max(count - 1, 1.0)).sqrt()

    def prompts(self, rows: Sequence[dict]) -> list[list[int]]:
        return [prompt_ids(self.tokenizer, row["messages"]) for row in rows]

    def _empty_batch(self) -> MicroBatch:
        ids = torch.tensor([[self.pad_id]], device=self.device)
        nothing = torch.zeros(1, 1, device=self.device)
        reference = nothing if self.reference_model is not None else None
        return MicroBatch(ids, torch.ones_like(ids), ids, torch.zeros_like(ids), nothing[0], reference)

    def _micro_batch(self, rollouts: Rollouts, advantages: torch.Tensor, rows: range) -> MicroBatch:
        prompts = [rollouts.prompt_ids[i] for i in rows]
        answers = [rollouts.answer_ids[i] for i in rows]
        width, length = max(map(len, prompts)), max(max(map(len, answers)), 1)
        tensor = lambda values: torch.tensor(values, device=self.device)  # noqa: E731
        micro = MicroBatch(
            prompt_ids=tensor([[self.pad_id] * (width - len(p)) + p for p in prompts]),
            prompt_mask=tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts]),
            answer_ids=tensor([a + [self.pad_id] * (length - len(a)) for a in answers]),
            answer_mask=tensor([[1] * len(a) + [0] * (length - len(a)) for a in answers]),
            advantages=advantages[list(rows)].to(self.device),
            ref_logps=None,
        )
        if self.reference_model is not None:
            with torch.no_grad():
                micro.ref_logps = answer_logps(
                    self.reference_model,
                    micro.prompt_ids,
                    micro.prompt_mask,
                    micro.answer_ids,
                    self.options.temperature,
                    micro.answer_mask,
                )
        return micro


def check_prompt_lengths(tokenizer, rows: Sequence[dict], field: str, max_seq_length: int, answer_tokens: int) -> None:
    """Every prompt with its longest answer fits max_seq_length; else the job fails at start."""
    for index, row in enumerate(rows):
        length = len(prompt_ids(tokenizer, row["messages"]))
        if length + answer_tokens > max_seq_length:
            raise InvalidDataError(
                f"{field}: row {index + 1}'s prompt has {length} tokens; with answers of up to {answer_tokens} "
                f"tokens it passes training.max_seq_length={max_seq_length}. Raise max_seq_length or shorten the prompt",
                param=field,
            )
