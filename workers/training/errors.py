"""Errors that end a training run, each with a stable code the worker and the API report."""

from __future__ import annotations


class TrainingError(RuntimeError):
    """Its message is shown to the user as is: it names fields and models, never a server path."""

    code = "training_error"

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param  # the job field to change, when one is to blame


class InvalidDataError(TrainingError):
    code = "invalid_training_file"


class ModelLoadError(TrainingError):
    code = "model_not_found"


class InvalidSettingsError(TrainingError):
    """Settings the model cannot take: a max_seq_length past its context, LoRA targets it lacks."""

    code = "invalid_hyperparameters"


class DivergedError(TrainingError):
    code = "training_diverged"


class OutputConflictError(TrainingError):
    code = "output_conflict"


class TrainingPaused(Exception):
    """SIGTERM arrived: the run wrote a checkpoint at `step` and stopped; starting it again resumes."""

    def __init__(self, step: int):
        super().__init__(f"paused at step {step}")
        self.step = step
