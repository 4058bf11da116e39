"""Resolving a job's inputs for its trainer: the stored spec with the model name and file ids
turned into paths on this machine."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from lmtune.catalogue import load_catalogue
from lmtune.layout import DataLayout
from lmtune.spec import JobSpec
from lmtune.store import files as file_store
from lmtune.store.database import Database
from lmtune.store.fine_tuned import get_fine_tuned_model
from lmtune.store.models import Job


class InputError(Exception):
    """An input the job names is gone or unknown: the job fails with this code."""

    def __init__(self, code: str, message: str, param: str):
        super().__init__(message)
        self.code, self.param = code, param


def trainer_spec(db: Database, data: DataLayout, job: Job) -> JobSpec:
    spec = JobSpec.model_validate(job.spec)
    update = {"model": model_source(db, data, spec.model, job.owner)}
    for name in ("training_file", "validation_file"):
        file_id = getattr(spec, name)
        if file_id:
            row = file_store.get_file(db, file_id, job.owner)
            if row is None:
                raise InputError("file_not_found", f"{name} {file_id} no longer exists", name)
            update[name] = str(data.resolve(row.path))
    return spec.model_copy(update=update)


def model_source(db: Database, data: DataLayout, name: str, owner: str) -> str:
    if name.startswith("ft:"):
        row = get_fine_tuned_model(db, name, owner)
        if row is None:
            raise InputError("model_not_found", f"the fine-tuned model {name} does not exist", "model")
        return str(data.resolve(row.path))
    entry = load_catalogue().get(name)
    if entry is None:
        raise InputError("model_not_found", f"model {name!r} is not in the catalogue", "model")
    if entry.builtin:
        return str(ensure_builtin_model(data, name))
    return entry.source


def ensure_builtin_model(data: DataLayout, name: str) -> Path:
    """Made once, aside and renamed into place, so concurrent workers never see half a model."""
    folder = data.builtin_model(name)
    if not folder.exists():
        from workers.training.tiny_model import make_tiny_model

        partial = folder.with_name(f".partial-{name}-{os.getpid()}")
        make_tiny_model(partial)
        try:
            os.rename(partial, folder)
        except OSError:  # another worker won the race
            shutil.rmtree(partial, ignore_errors=True)
    return folder
