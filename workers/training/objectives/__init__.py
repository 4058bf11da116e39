"""Training methods, by the method type a job names: see base.py for what an objective owns."""

from __future__ import annotations

from lmtune.spec import JobSpec
from workers.training.objectives.base import Objective
from workers.training.objectives.dpo import Dpo
from workers.training.objectives.grpo import Grpo
from workers.training.objectives.supervised import Supervised

OBJECTIVES: dict[str, type[Objective]] = {objective.method: objective for objective in (Supervised, Dpo, Grpo)}


def objective_for(spec: JobSpec, tokenizer) -> Objective:
    """The objective of the job's method (lmtune/methods.py names the methods a spec may have)."""
    return OBJECTIVES[spec.method.type](spec, tokenizer)
