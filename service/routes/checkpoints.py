"""Checkpoints of a job, and downloads of them and of the final model: whole (tar) or file by file
(HTTP Range, sha256).

OpenAI never lets anyone download weights; lmtune does. Only files listed in the folder's manifest
(written by the trainer) are served, so a client-given path never reaches the filesystem as is.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse, StreamingResponse

from lmtune.exports import final_folder
from lmtune.layout import MANIFEST, DataLayout, read_manifest
from lmtune.problems import quote
from lmtune.services import RequestError
from lmtune.store import history
from lmtune.store.models import Job
from service.deps import DbDep, OwnedJob, SettingsDep
from service.errors import documented, not_found
from service.schemas import JobCheckpoint, ListResponse, ManifestEntry
from service.streaming import HeldFileResponse, TarArchive

router = APIRouter(prefix="/v1/fine_tuning/jobs/{job_id}", tags=["checkpoints and downloads"])


@router.get("/checkpoints", response_model=ListResponse[JobCheckpoint], responses=documented(404))
def list_checkpoints(
    job: OwnedJob, db: DbDep, after: str | None = None, limit: Annotated[int, Query(ge=1, le=100)] = 10
) -> ListResponse[JobCheckpoint]:
    """Newest first; the trainer keeps the newest `training.keep_checkpoints` on disk."""
    rows, more = history.list_checkpoints(db, job.id, after=after, limit=limit)
    return ListResponse(data=[JobCheckpoint.of(row, job) for row in rows], has_more=more)


@router.get("/checkpoints/{checkpoint_id}/content", response_class=StreamingResponse, responses=documented(404))
def checkpoint_archive(job: OwnedJob, checkpoint_id: str, db: DbDep, settings: SettingsDep):
    """The whole checkpoint as a tar archive (model, tokenizer, training state, manifest.json)."""
    folder = _checkpoint_folder(job, checkpoint_id, db, settings)
    return _archive(folder, f"{job.id}-{folder.name}")


@router.get("/checkpoints/{checkpoint_id}/files", response_model=ListResponse[ManifestEntry], responses=documented(404))
def checkpoint_files(job: OwnedJob, checkpoint_id: str, db: DbDep, settings: SettingsDep):
    """Each file of the checkpoint with its size, sha256 and download URL."""
    folder = _checkpoint_folder(job, checkpoint_id, db, settings)
    return manifest_listing(folder, f"/v1/fine_tuning/jobs/{job.id}/checkpoints/{checkpoint_id}/files")


@router.api_route(
    "/checkpoints/{checkpoint_id}/files/{path:path}",
    methods=["GET", "HEAD"],
    response_class=FileResponse,
    responses=documented(404, 416),
)
def checkpoint_file(job: OwnedJob, checkpoint_id: str, path: str, db: DbDep, settings: SettingsDep):
    """One file; supports `Range: bytes=...`; its sha256 is in the `X-Checksum-SHA256` header."""
    return manifest_file(_checkpoint_folder(job, checkpoint_id, db, settings), path)


@router.get("/final/content", response_class=StreamingResponse, responses=documented(404))
def final_archive(job: OwnedJob, settings: SettingsDep):
    """The fine-tuned model as a tar archive (for LoRA: the merged model and `adapter/`)."""
    return _archive(final_folder(DataLayout(settings.data_dir), job), f"{job.id}-final")


@router.get("/final/files", response_model=ListResponse[ManifestEntry], responses=documented(404))
def final_files(job: OwnedJob, settings: SettingsDep):
    return manifest_listing(
        final_folder(DataLayout(settings.data_dir), job), f"/v1/fine_tuning/jobs/{job.id}/final/files"
    )


@router.api_route(
    "/final/files/{path:path}", methods=["GET", "HEAD"], response_class=FileResponse, responses=documented(404, 416)
)
def final_file(job: OwnedJob, path: str, settings: SettingsDep):
    return manifest_file(final_folder(DataLayout(settings.data_dir), job), path)


def _checkpoint_folder(job: Job, checkpoint_id: str, db, settings) -> Path:
    row = history.get_checkpoint(db, job.id, checkpoint_id)
    folder = DataLayout(settings.data_dir).resolve(row.path) if row else None
    if folder is None or not (folder / MANIFEST).exists():
        raise not_found("checkpoint", checkpoint_id)
    return folder


def _archive(folder: Path, name: str) -> StreamingResponse:
    try:
        archive = TarArchive(folder, [*sorted(read_manifest(folder)), MANIFEST], name)
    except FileNotFoundError:  # removed since the manifest was read (a checkpoint pruned, a job deleted)
        raise RequestError(
            404, "the folder was removed while the download began; list it again", code="not_found"
        ) from None
    return StreamingResponse(
        archive,
        media_type="application/x-tar",
        headers={"Content-Disposition": f'attachment; filename="{name}.tar"', "Content-Length": str(archive.size)},
    )


def manifest_listing(folder: Path, base_url: str) -> ListResponse[ManifestEntry]:
    entries = [
        ManifestEntry(path=p, bytes=e["bytes"], sha256=e["sha256"], url=f"{base_url}/{p}")
        for p, e in sorted(read_manifest(folder).items())
    ]
    return ListResponse(data=entries)


def manifest_file(folder: Path, path: str) -> FileResponse:
    entry = read_manifest(folder).get(path)
    if entry is None:
        raise RequestError(
            404, f"no file {quote(path)} in this folder; GET .../files lists them", code="file_not_found"
        )
    digest = base64.b64encode(bytes.fromhex(entry["sha256"])).decode()
    try:
        return HeldFileResponse(
            folder / entry["path"],
            filename=Path(path).name,
            media_type="application/octet-stream",
            headers={"X-Checksum-SHA256": entry["sha256"], "Repr-Digest": f"sha-256=:{digest}:"},
        )
    except FileNotFoundError:  # removed since the manifest was read (a checkpoint pruned, a job deleted)
        raise RequestError(
            404, f"{quote(path)} was removed while the download began; list the files again", code="file_not_found"
        ) from None
