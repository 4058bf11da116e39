"""Errors that end a training run, each with a stable code the worker and the API report."""

from __future__ import annotations


class TrainingError(RuntimeError):
    code = "training_error"
    retryable = False  # a bad dataset or a NaN loss fails the same way every time


class InvalidDataError(TrainingError):
    code = "invalid_training_file"


class ModelLoadError(TrainingError):
    code = "model_not_found"


class DivergedError(TrainingError):
    code = "training_diverged"


class OutputConflictError(TrainingError):
    code = "output_conflict"


class TrainingPaused(Exception):
    """SIGTERM arrived: the run wrote a checkpoint at `step` and stopped; starting it again resumes."""

    def __init__(self, step: int, checkpoint):
        super().__init__(f"paused at step {step}; checkpoint {checkpoint}")
        self.step = step
        self.checkpoint = checkpoint
