"""What a model id names for an API key: a catalogue model, a fine-tuned model (`ft:...`) or one of
a job's checkpoints (`ft:...:ckpt-step-N`, OpenAI's `fine_tuned_model_checkpoint`).

Jobs start from these, and the model server answers with them. Folders are always found through
the store and the data folder, never taken from a client.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lmtune.catalogue import load_catalogue
from lmtune.layout import ADAPTER_CONFIG, ADAPTER_DIR, DataLayout
from lmtune.problems import quote_id
from lmtune.store import history
from lmtune.store.database import Database
from lmtune.store.fine_tuned import (
    checkpoint_model_id,
    fine_tuned_model_id,
    get_fine_tuned_model,
    split_checkpoint_model_id,
)
from lmtune.store.jobs import get_job

MAX_DEPTH = 16  # a fine-tuned model of a fine-tuned model of ...


class ModelNotFound(LookupError):
    """No such model for this key; the message names the id (as for a model that exists for another key)."""


@dataclass(frozen=True)
class ModelRef:
    """`source` is a model folder in Hugging Face format or a hub id; `builtin` names a model made on
    first use (at `source`); for a LoRA job's models, `adapter` is the adapter folder and `base` the
    model it was trained on."""

    id: str
    source: str
    builtin: str | None = None
    adapter: str | None = None
    base: ModelRef | None = None


def resolve_model(db: Database, data: DataLayout, model_id: str, owner: str) -> ModelRef:
    return _resolve(db, data, model_id, owner, MAX_DEPTH)


def _resolve(db: Database, data: DataLayout, model_id: str, owner: str, depth: int) -> ModelRef:
    if depth == 0:
        raise ModelNotFound(f"model {quote_id(model_id)} descends from too many fine-tuned models")
    checkpoint = split_checkpoint_model_id(model_id)
    if checkpoint:
        return _checkpoint(db, data, model_id, owner, *checkpoint, depth)
    if model_id.startswith("ft:"):
        row = get_fine_tuned_model(db, model_id, owner)
        if row is None:
            raise ModelNotFound(f"no fine-tuned model {quote_id(model_id)}")
        folder = data.resolve(row.path)
        adapter = folder / ADAPTER_DIR
        if (adapter / ADAPTER_CONFIG).exists():  # the merged model is beside it, for downloads and new jobs
            return ModelRef(
                model_id, str(folder), adapter=str(adapter), base=_job_base(db, data, row.job_id, owner, depth)
            )
        return ModelRef(model_id, str(folder))
    entry = load_catalogue().get(model_id)
    if entry is None:
        known = ", ".join(sorted(load_catalogue()))
        raise ModelNotFound(
            f"model {quote_id(model_id)} is not in the catalogue (known: {known}) nor a fine-tuned model of this key"
        )
    if entry.builtin:
        return ModelRef(model_id, str(data.builtin_model(model_id)), builtin=entry.builtin)
    return ModelRef(model_id, entry.source)


def job_output(db: Database, data: DataLayout, job_id: str, owner: str, step: int | None) -> ModelRef:
    """A job's final model (`step` None: whole, a LoRA job's merged one) or its checkpoint at `step`,
    found through its run folder, so also after its fine-tuned model was deleted from the list."""
    job = get_job(db, job_id, owner)
    if job is None:
        raise ModelNotFound(f"no fine-tuning job {quote_id(job_id)}")
    model_id = fine_tuned_model_id(job.spec["model"], job.suffix, job.id)
    if step is None:
        return ModelRef(model_id, str(data.job(job.id).final))
    return _checkpoint(db, data, checkpoint_model_id(model_id, step), owner, model_id, step, MAX_DEPTH)


def _checkpoint(db, data, model_id: str, owner: str, job_model: str, step: int, depth: int) -> ModelRef:
    job = get_job(db, job_model.rsplit(":", 1)[-1], owner)
    if job is None or fine_tuned_model_id(job.spec["model"], job.suffix, job.id) != job_model:
        raise ModelNotFound(f"no checkpoint {quote_id(model_id)}")
    row = history.get_checkpoint_at(db, job.id, step)
    folder = data.resolve(row.path) if row else None
    if folder is None or not folder.is_dir():
        raise ModelNotFound(
            f"no checkpoint {quote_id(model_id)}: the job has no checkpoint at step {step} (only the newest are kept)"
        )
    if (folder / ADAPTER_CONFIG).exists():
        return ModelRef(model_id, str(folder), adapter=str(folder), base=_job_base(db, data, job.id, owner, depth))
    return ModelRef(model_id, str(folder))


def _job_base(db, data: DataLayout, job_id: str, owner: str, depth: int) -> ModelRef:
    """The model a LoRA job trained its adapter on: what it started from, as a whole model."""
    job = get_job(db, job_id, owner)
    base = _resolve(db, data, job.spec["model"], owner, depth - 1)
    if is_adapter_only(base):  # the worker merged it into the job's folder before training
        return ModelRef(base.id, str(data.job(job_id).start_model))
    return base


def is_adapter_only(ref: ModelRef) -> bool:
    """A LoRA checkpoint holds only its adapter: a job starting from it needs it merged first."""
    return ref.adapter is not None and Path(ref.adapter) == Path(ref.source)
