"""/v1/files: upload (streamed to disk, size-capped, validated), list, get, content, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import FileResponse

from lmtune.layout import DataLayout
from lmtune.store import files as file_store
from lmtune.uploads import delete_file as delete_file_and_bytes
from lmtune.uploads import register_upload
from service.deps import DbDep, OwnerDep, SettingsDep
from service.errors import documented, not_found
from service.schemas import Deleted, FileList, FileObject
from service.upload_form import FORM_SCHEMA, receive_upload_form

router = APIRouter(prefix="/v1/files", tags=["files"])


@router.post("", response_model=FileObject, responses=documented(400, 409, 413, 429, 507), openapi_extra=FORM_SCHEMA)
async def upload_file(
    request: Request,
    owner: OwnerDep,
    db: DbDep,
    settings: SettingsDep,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=255)] = None,
) -> FileObject:
    """Upload a JSONL training file (multipart: `file`, `purpose=fine-tune`). It is streamed to disk
    and cut off at the size limit (413), then every line is checked; a bad file is refused with the
    line numbers of its first problems. With an `Idempotency-Key` header, a repeat within 24 h
    returns the first file (another file with the same key: 409)."""
    gate = request.app.state.upload_gate
    async with gate.admit(owner) as place:
        form = await receive_upload_form(request, settings)
        try:
            row = await gate.run(
                place,
                register_upload,
                settings,
                db,
                owner,
                form.filename,
                form.fields.get("purpose", ""),
                form.upload,
                idempotency_key,
            )
        except BaseException:
            form.upload.discard()  # cancelled while waiting its turn; a no-op once registered
            raise
    return FileObject.of(row)


@router.get("", response_model=FileList, responses=documented())
def list_files(owner: OwnerDep, db: DbDep, purpose: str | None = None) -> FileList:
    return FileList.of([FileObject.of(row) for row in file_store.list_files(db, owner, purpose)])


@router.get("/{file_id}", response_model=FileObject, responses=documented(404))
def get_file(file_id: str, owner: OwnerDep, db: DbDep) -> FileObject:
    return FileObject.of(_owned_file(db, file_id, owner))


@router.get("/{file_id}/content", response_class=FileResponse, responses=documented(404))
def file_content(file_id: str, owner: OwnerDep, db: DbDep, settings: SettingsDep) -> FileResponse:
    row = _owned_file(db, file_id, owner)
    media = "text/csv" if row.filename.endswith(".csv") else "application/jsonl"
    return FileResponse(DataLayout(settings.data_dir).resolve(row.path), media_type=media, filename=row.filename)


@router.delete("/{file_id}", response_model=Deleted, responses=documented(404))
def delete_file(file_id: str, owner: OwnerDep, db: DbDep, settings: SettingsDep) -> Deleted:
    row = _owned_file(db, file_id, owner)
    delete_file_and_bytes(settings, db, row)
    return Deleted(id=row.id, object="file")


def _owned_file(db, file_id: str, owner: str):
    row = file_store.get_file(db, file_id, owner)
    if row is None:
        raise not_found("file", file_id)
    return row
