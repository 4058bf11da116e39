"""How a training run ends when it does not finish: the errors with their codes, and the exit
statuses the worker reads (the trainer's failure contract; `workers/training/entry.py` applies it)."""

from __future__ import annotations

from workers.models.errors import ReportedError

# Exit status of a trainer stopped by SIGTERM after writing its checkpoint (sysexits' EX_TEMPFAIL):
# running the same command again resumes.
EXIT_PAUSED = 75
# Exit status of a trainer that found its run folder claimed by a newer attempt (lmtune.fence):
# it stopped without writing anything more.
EXIT_SUPERSEDED = 76
# Exit status of a trainer that found the disk full and could not even write its error report
# (sysexits' EX_IOERR): the worker reports disk_full itself.
EXIT_DISK_FULL = 74


class InvalidDataError(ReportedError):
    code = "invalid_training_file"


class DivergedError(ReportedError):
    code = "training_diverged"


class QuantizationUnavailableError(ReportedError):
    code = "quantization_unavailable"


class OutputConflictError(ReportedError):
    code = "output_conflict"


class TrainingPaused(Exception):
    """SIGTERM arrived: the run wrote a checkpoint at `step` and stopped; starting it again resumes."""

    def __init__(self, step: int):
        super().__init__(f"paused at step {step}")
        self.step = step
