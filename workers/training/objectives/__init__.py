"""Training methods, by the method type a job names: see base.py for what an objective owns."""

from __future__ import annotations

from lmtune.spec import JobSpec
from workers.training.objectives.base import Objective
from workers.training.objectives.supervised import Supervised

OBJECTIVES: dict[str, type[Objective]] = {objective.method: objective for objective in (Supervised,)}


def objective_for(spec: JobSpec, tokenizer) -> Objective:
    """The job's objective. The spec names no method yet, so every job is supervised; a method
    field in the spec picks its entry of OBJECTIVES here."""
    return OBJECTIVES[Supervised.method](spec, tokenizer)
