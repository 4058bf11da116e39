"""Exports of a job's model (GGUF for llama.cpp and Ollama), written by a worker and downloaded file
by file like a checkpoint (HTTP Range, sha256). lmtune's own routes: OpenAI has nothing like them.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from lmtune.errors import RequestError
from lmtune.exports import start_export
from lmtune.layout import MANIFEST, DataLayout
from lmtune.store import exports as export_store
from lmtune.store.models import Job
from service.deps import DbDep, OwnedJob, QueueDep, SettingsDep
from service.errors import documented, not_found
from service.routes.checkpoints import manifest_file, manifest_listing
from service.schemas import ExportObject, ExportRequest, ListResponse, ManifestEntry

router = APIRouter(prefix="/v1/fine_tuning/jobs/{job_id}/exports", tags=["checkpoints and downloads"])


@router.post("", response_model=ExportObject, responses=documented(400, 404))
def create_export(
    job: OwnedJob, body: ExportRequest, db: DbDep, settings: SettingsDep, queue: QueueDep
) -> ExportObject:
    """Export the final model (or the checkpoint at `step`) as GGUF, LoRA merged first, with an Ollama
    Modelfile. A worker writes it; poll the export until `succeeded`. Asking again returns the same
    export (a failed one is tried again)."""
    return ExportObject.of(start_export(settings, db, queue, job, body.format, body.quantization, body.step))


@router.get("", response_model=ListResponse[ExportObject], responses=documented(404))
def list_exports(job: OwnedJob, db: DbDep) -> ListResponse[ExportObject]:
    return ListResponse(data=[ExportObject.of(row) for row in export_store.exports_of_job(db, job.id, job.owner)])


@router.get("/{export_id}", response_model=ExportObject, responses=documented(404))
def get_export(job: OwnedJob, export_id: str, db: DbDep) -> ExportObject:
    return ExportObject.of(_owned_export(db, job, export_id))


@router.get("/{export_id}/files", response_model=ListResponse[ManifestEntry], responses=documented(404))
def export_files(job: OwnedJob, export_id: str, db: DbDep, settings: SettingsDep):
    """Each file of a finished export with its size, sha256 and download URL."""
    folder = _export_folder(db, job, export_id, settings)
    return manifest_listing(folder, f"/v1/fine_tuning/jobs/{job.id}/exports/{export_id}/files")


@router.api_route(
    "/{export_id}/files/{path:path}",
    methods=["GET", "HEAD"],
    response_class=FileResponse,
    responses=documented(404, 416),
)
def export_file(job: OwnedJob, export_id: str, path: str, db: DbDep, settings: SettingsDep):
    """One file; supports `Range: bytes=...`; its sha256 is in the `X-Checksum-SHA256` header."""
    return manifest_file(_export_folder(db, job, export_id, settings), path)


def _owned_export(db, job: Job, export_id: str):
    row = export_store.get_export(db, export_id, job.id, job.owner)
    if row is None:
        raise not_found("export", export_id)
    return row


def _export_folder(db, job: Job, export_id: str, settings) -> Path:
    row = _owned_export(db, job, export_id)
    folder = DataLayout(settings.data_dir).resolve(row.path) if row.path else None
    if row.status != export_store.SUCCEEDED or folder is None or not (folder / MANIFEST).exists():
        raise RequestError(
            404, f"export {row.id} is {row.status}: its files are listed once it has succeeded", code="not_ready"
        )
    return folder
