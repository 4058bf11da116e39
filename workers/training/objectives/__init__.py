"""Training methods, by the method type a job names: see base.py for what an objective owns."""

from __future__ import annotations

from lmtune.spec import JobSpec
from workers.training.objectives.base import Objective
from workers.training.objectives.grpo import Grpo
from workers.training.objectives.supervised import Supervised

OBJECTIVES: dict[str, type[Objective]] = {objective.method: objective for objective in (Supervised, Grpo)}


def objective_for(spec: JobSpec, tokenizer) -> Objective:
    """The job's objective: its method's entry of OBJECTIVES (supervised without a method)."""
    return OBJECTIVES[spec.method.type if spec.method else Supervised.method](spec, tokenizer)
