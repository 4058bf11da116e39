"""Which examples each process trains on at each optimizer step.

The order is a pure function of (seed, epoch), and a step's global batch is cut into
accumulation x processes slices. So a resumed run skips consumed batches by step number alone,
and 1 process or N processes see exactly the same global batches.
"""

from __future__ import annotations

import math

import torch


class StepPlan:
    def __init__(self, n_examples: int, batch_size: int, accumulation: int, world_size: int, seed: int, shuffle: bool):
        self.n_examples = n_examples
        self.batch_size = batch_size
        self.accumulation = accumulation
        self.world_size = world_size
        self.seed = seed
        self.shuffle = shuffle
        self.steps_per_epoch = math.ceil(n_examples / batch_size)
        self._order_cache: tuple[int, list[int]] | None = None

    def epoch_of(self, step: int) -> int:
        """0-based epoch of a 0-based step."""
        return step // self.steps_per_epoch

    def ends_epoch(self, step: int) -> bool:
        return (step + 1) % self.steps_per_epoch == 0

    def order(self, epoch: int) -> list[int]:
        if self._order_cache is None or self._order_cache[0] != epoch:
            if self.shuffle:
                generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
                order = torch.randperm(self.n_examples, generator=generator).tolist()
            else:
                order = list(range(self.n_examples))
            self._order_cache = (epoch, order)
        return self._order_cache[1]

    def micro_batches(self, step: int, rank: int) -> list[list[int]]:
        """The example indices of each accumulation micro-batch of `rank` at 0-based `step`.

        A short last batch can leave a slice empty; the loop still runs it (with no target
        tokens) so that every process takes part in every gradient reduction.
        """
        start = (step % self.steps_per_epoch) * self.batch_size
        batch = self.order(self.epoch_of(step))[start : start + self.batch_size]
        slices = self.accumulation * self.world_size
        bounds = [round(i * len(batch) / slices) for i in range(slices + 1)]
        chunks = [batch[bounds[i] : bounds[i + 1]] for i in range(slices)]
        return [chunks[a * self.world_size + rank] for a in range(self.accumulation)]
