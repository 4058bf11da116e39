"""Uploads: received straight into the files folder (counted, hashed, cut off at the size limit),
validated line by line from disk, and only then given an id and a row."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import unicodedata
from pathlib import Path
from typing import BinaryIO

from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError

from lmtune import quotas
from lmtune.disk import DISK_FULL, disk_full_message, is_disk_full
from lmtune.eval_spec import MAX_INLINE_ITEMS, FileId, RowsError, rows
from lmtune.ids import new_id
from lmtune.layout import DataLayout
from lmtune.reinforcement import check_upload_row
from lmtune.services import TRAINING_PURPOSE, RequestError, earlier_object, idempotency
from lmtune.settings import Settings
from lmtune.store import files as file_store
from lmtune.store.database import Database
from lmtune.store.models import File
from lmtune.training_data import DatasetError, FileRows, scan_file

EVALS_PURPOSE = "evals"  # an eval run's items: {"item": {...}, "sample": {...}} a line
PURPOSES = (TRAINING_PURPOSE, EVALS_PURPOSE)
MAX_FILENAME_CHARS = 128
DEFAULT_FILENAME = "upload.jsonl"
CHUNK = 1 << 20


class PartialUpload:
    """An upload as it arrives: a hidden file in the files folder, never longer than `limit`."""

    def __init__(self, settings: Settings):
        folder = DataLayout(settings.data_dir).files
        folder.mkdir(parents=True, exist_ok=True)
        self.limit = settings.max_upload_bytes
        self.size = 0
        self._digest = hashlib.sha256()
        self._handle = tempfile.NamedTemporaryFile(dir=folder, prefix=".upload-", delete=False)
        self.path = Path(self._handle.name)

    def write(self, chunk: bytes) -> None:
        if self.size + len(chunk) > self.limit:
            raise too_large(self.limit)
        try:
            self._handle.write(chunk)
        except OSError as error:
            raise self._no_room(error, len(chunk)) from None
        self.size += len(chunk)
        self._digest.update(chunk)

    def _no_room(self, error: OSError, adding: int) -> Exception:
        """507 with the space the upload needs, its partial file removed; any other error as it was."""
        if not is_disk_full(error):
            return error
        self.discard()
        return RequestError(
            507, disk_full_message("storing this upload", self.size + adding, self.path.parent), code=DISK_FULL
        )

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def close(self) -> None:
        try:
            self._handle.close()  # writes what is still buffered
        except OSError as error:
            raise self._no_room(error, 0) from None

    def discard(self) -> None:
        try:
            self._handle.close()
        except OSError:  # what was buffered does not fit: it is thrown away anyway
            pass
        self.path.unlink(missing_ok=True)


def too_large(limit: int) -> RequestError:
    return RequestError(
        413, f"the file is larger than the limit of {limit:,} bytes", param="file", code="file_too_large"
    )


def safe_filename(name: str | None) -> str:
    """The base name only, without control, format (bidi, zero-width) or path characters, bounded."""
    base = re.split(r"[/\\]", name or "")[-1]
    kept = "".join(c for c in base if unicodedata.category(c)[0] not in "CZ" or c == " ").strip(" .")
    if len(kept) > MAX_FILENAME_CHARS:
        stem, dot, extension = kept.rpartition(".")
        extension = extension[:16] if dot else ""
        kept = kept[: MAX_FILENAME_CHARS - len(extension) - 1].rstrip(" .") + ("." + extension if extension else "")
    return kept or DEFAULT_FILENAME


def check_purpose(purpose: str) -> None:
    if purpose not in PURPOSES:
        raise RequestError(400, f"purpose must be one of {', '.join(PURPOSES)}", param="purpose")


def register_upload(
    settings: Settings,
    db: Database,
    owner: str,
    filename: str,
    purpose: str,
    upload: PartialUpload,
    idempotency_key: str | None = None,
) -> File:
    """Validate a received upload from disk, line by line; store it under an id, or discard it. A
    repeat of an `idempotency_key` request (same name, purpose and bytes) returns the first file."""
    try:
        upload.close()
        check_purpose(purpose)
        quotas.check_storage(settings, db, owner, adding=upload.size)
        filename = safe_filename(filename)
        idem = idempotency(owner, idempotency_key, "file", filename, purpose, upload.sha256)
        earlier = earlier_object(db, idem, lambda object_id: file_store.get_file(db, object_id, owner))
        if earlier is not None:
            upload.discard()
            return earlier
        found = _check_rows(upload.path, purpose, filename)
        data = DataLayout(settings.data_dir)
        file_id = new_id("file")
        path = data.file(file_id)
        os.replace(upload.path, path)  # same folder: a rename, never a copy
    except BaseException:
        upload.discard()
        raise
    try:
        return file_store.add_file(
            db,
            file_id=file_id,
            owner=owner,
            filename=filename,
            purpose=purpose,
            size=upload.size,
            sha256=upload.sha256,
            examples=found.examples,
            row_shapes=found.shapes,
            path=data.relative(path),
            idem=idem,
        )
    except IntegrityError:  # the same key, sent twice at once: the other request stored the file
        path.unlink(missing_ok=True)
        return earlier_object(db, idem, lambda object_id: file_store.get_file(db, object_id, owner))


def _check_rows(path: Path, purpose: str, filename: str) -> FileRows:
    """The file's examples (fine-tune) or items (evals), each line checked; 400 naming the line."""
    try:
        if purpose == EVALS_PURPOSE:
            return FileRows(len(rows(FileId(type="file_id", id="upload"), path, MAX_INLINE_ITEMS)))
        return scan_file(path, check_row=check_upload_row)
    except (DatasetError, RowsError, ValidationError) as error:
        what = "a valid evals" if purpose == EVALS_PURPOSE else "a valid fine-tuning"
        raise RequestError(
            400, f"{filename} is not {what} file:\n{str(error)[:2000]}", param="file", code="invalid_file"
        ) from None


def delete_file(settings: Settings, db: Database, row: File) -> None:
    """A file's row, then its bytes on disk once the row is gone."""
    file_store.delete_file(db, row.id)
    DataLayout(settings.data_dir).resolve(row.path).unlink(missing_ok=True)


def store_upload(settings: Settings, db: Database, owner: str, filename: str, purpose: str, stream: BinaryIO) -> File:
    """An upload from a file-like object (for callers other than the HTTP API)."""
    upload = PartialUpload(settings)
    try:
        while chunk := stream.read(CHUNK):
            upload.write(chunk)
    except BaseException:
        upload.discard()
        raise
    return register_upload(settings, db, owner, filename, purpose, upload)
