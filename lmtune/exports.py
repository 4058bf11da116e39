"""What a client can ask of exports, independent of HTTP: a job's final model or one of its
checkpoints written as GGUF (for llama.cpp and Ollama) by a worker, kept in the run folder
(`exports/<source>-<format>-<quantization>/`, with a manifest) and downloaded like a checkpoint.
A second request for the same export returns the first; a failed one is tried again.
"""

from __future__ import annotations

import json
from pathlib import Path

from lmtune import quotas
from lmtune.dispatch import JobQueue
from lmtune.errors import RequestError
from lmtune.estimates import parameter_count
from lmtune.layout import MANIFEST, DataLayout, checkpoint_name
from lmtune.model_availability import local_folder
from lmtune.model_refs import is_adapter_only, job_output
from lmtune.settings import Settings
from lmtune.store import exports as export_store
from lmtune.store import history
from lmtune.store.database import Database
from lmtune.store.models import Export, Job, JobStatus

FORMATS = ("gguf",)
# the bytes a weight takes in the file: f16's two; q8_0's blocks of 32 int8 weights and an f16 scale
BYTES_PER_WEIGHT = {"f16": 2.0, "q8_0": 34 / 32}
QUANTIZATIONS = tuple(BYTES_PER_WEIGHT)
# the Hugging Face architectures the GGUF writer covers (workers/models/gguf_export.py)
GGUF_ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM")
FINAL = "final"


def export_folder_name(source: str, fmt: str, quantization: str) -> str:
    return f"{source}-{fmt}-{quantization}"


def start_export(
    settings: Settings, db: Database, queue: JobQueue, job: Job, fmt: str, quantization: str, step: int | None
) -> Export:
    """The export of the job's final model (`step` None) or checkpoint, queued unless one is kept."""
    if fmt not in FORMATS:
        raise RequestError(
            400, f"format must be one of {', '.join(FORMATS)}, got {fmt!r}", param="format", code="invalid_value"
        )
    if quantization not in QUANTIZATIONS:
        raise RequestError(
            400,
            f"quantization must be one of {', '.join(QUANTIZATIONS)}, got {quantization!r}",
            param="quantization",
            code="invalid_value",
        )
    folder = source_folder(settings, db, job, step)
    _check_architecture(folder)
    source = FINAL if step is None else checkpoint_name(step)
    row, created = export_store.request_export(
        db,
        job.owner,
        job.id,
        source,
        step,
        fmt,
        quantization,
        export_store.export_queue(settings.queue_prefix),
        before_queueing=lambda: check_room(settings, db, job.owner, job.id, step, quantization),
    )
    if created:
        queue.send(row)
    return row


def check_room(settings: Settings, db: Database, owner: str, job_id: str, step: int | None, quantization: str) -> None:
    """429 `quota_exceeded` when the export would take the key past its storage quota: asked when
    the export is requested and again when a worker starts writing it (others may have landed since)."""
    adding = expected_bytes(DataLayout(settings.data_dir), db, owner, job_id, step, quantization)
    quotas.check_storage(settings, db, owner, adding=adding, what="this export adds about")


def expected_bytes(data: DataLayout, db: Database, owner: str, job_id: str, step: int | None, quantization: str) -> int:
    """About the size of the export's file: its weights at the quantization's size (the vocabulary
    and the norms add a few percent); 0 when the weights are not here to count."""
    ref = job_output(db, data, job_id, owner, step)
    whole = ref.base if is_adapter_only(ref) else ref  # a LoRA checkpoint is exported merged into its base
    weights = parameter_count(local_folder(whole)) if whole is not None else None
    return int((weights or 0) * BYTES_PER_WEIGHT[quantization])


def source_folder(settings: Settings, db: Database, job: Job, step: int | None) -> Path:
    """The complete folder of the final model or of the checkpoint at `step` (404 when there is none)."""
    data = DataLayout(settings.data_dir)
    if step is None:
        return final_folder(data, job)
    row = history.get_checkpoint_at(db, job.id, step)
    folder = data.resolve(row.path) if row else None
    if folder is None or not (folder / MANIFEST).exists():
        kept, _ = history.list_checkpoints(db, job.id, limit=100)
        steps = ", ".join(str(c.step) for c in sorted(kept, key=lambda c: c.step)) or "none"
        raise RequestError(
            404,
            f"job {job.id} has no checkpoint at step {step} (checkpoints kept: {steps})",
            param="step",
            code="not_found",
        )
    return folder


def final_folder(data: DataLayout, job: Job) -> Path:
    """The job's final model folder, complete (for downloads and exports), or why there is none (404)."""
    folder = data.job(job.id).final
    if (folder / MANIFEST).exists():
        return folder
    if job.status in (JobStatus.CANCELLED, JobStatus.FAILED):
        raise RequestError(
            404,
            f"job {job.id} was {job.status.value} and has no final model (one is written only when a job "
            "succeeds); GET .../checkpoints lists the checkpoints it kept, which download the same way",
            code="no_final_model",
        )
    raise RequestError(
        404, f"job {job.id} has no final model yet: it is written when the job succeeds", code="not_ready"
    )


def _check_architecture(folder: Path) -> None:
    """Refused now rather than by the worker; a LoRA checkpoint (no config.json) is checked there."""
    config = folder / "config.json"
    if not config.is_file():
        return
    architectures = json.loads(config.read_text()).get("architectures") or []
    if not set(architectures) & set(GGUF_ARCHITECTURES):
        raise RequestError(
            400,
            f"GGUF export covers the architectures {', '.join(GGUF_ARCHITECTURES)}; this model is "
            f"{', '.join(architectures) or 'of an unnamed architecture'}. Download it in Hugging Face format instead",
            param="format",
            code="unsupported_model",
        )
