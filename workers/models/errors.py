"""Errors that end a run or a request with a stable code the worker and the API report."""

from __future__ import annotations


class ReportedError(RuntimeError):
    """Its message is shown to the user as is: it names fields and models, never a server path."""

    code = "internal_error"

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param  # the job field to change, when one is to blame


class ModelLoadError(ReportedError):
    code = "model_not_found"


class InvalidHyperparametersError(ReportedError):
    """Hyperparameters or training options the model cannot take: a max_seq_length past its context, LoRA targets it lacks."""

    code = "invalid_hyperparameters"
