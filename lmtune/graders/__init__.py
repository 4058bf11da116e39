"""OpenAI's graders, one module for evaluations (workers, the API's graders/run) and training
(reinforcement fine-tuning's rewards): `grade_batch(grader, pairs, Tools(...))`.

Torch-free and HTTP-free: a judge model and an embedding model come in through `Tools`.
"""

from lmtune.graders.grading import Grade, Tools, criteria_results, grade_batch, sample_namespace
from lmtune.graders.judge import Judge, JudgeAnswer, JudgeCall, JudgeUnavailable
from lmtune.graders.sandbox import SandboxLimits, SandboxUnavailable
from lmtune.graders.schema import Grader, TestingCriterion
from lmtune.graders.similarity import Embedder, MetricUnavailable

__all__ = [
    "Embedder",
    "Grade",
    "Grader",
    "Judge",
    "JudgeAnswer",
    "JudgeCall",
    "JudgeUnavailable",
    "MetricUnavailable",
    "SandboxLimits",
    "SandboxUnavailable",
    "TestingCriterion",
    "Tools",
    "criteria_results",
    "grade_batch",
    "sample_namespace",
]
