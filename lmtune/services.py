"""What a client can ask of lmtune, independent of HTTP: upload a file, submit a job.

The HTTP routes are thin adapters around these; errors carry the HTTP status and the field.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from typing import BinaryIO

from lmtune.catalogue import load_catalogue
from lmtune.dispatch import JobQueue
from lmtune.ids import new_id
from lmtune.layout import DataLayout
from lmtune.settings import Settings
from lmtune.spec import JobSpec
from lmtune.store import files as file_store
from lmtune.store.database import Database
from lmtune.store.fine_tuned import get_fine_tuned_model
from lmtune.store.jobs import create_job, queue_name
from lmtune.store.models import File, Job
from lmtune.training_data import DatasetError, validate_jsonl_file

PURPOSES = ("fine-tune",)
CHUNK = 1 << 20


class RequestError(Exception):
    """A request that cannot be done as asked: `status` is the HTTP status, `param` the field."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def store_upload(settings: Settings, db: Database, owner: str, filename: str, purpose: str, stream: BinaryIO) -> File:
    """Stream the upload to disk (never whole in memory), refuse it past the size limit, validate
    every line, and only then give it an id and a row."""
    if purpose not in PURPOSES:
        raise RequestError(400, f"purpose must be one of {', '.join(PURPOSES)}", param="purpose")
    data = DataLayout(settings.data_dir)
    folder = data.files
    folder.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".upload-", delete=False) as partial:
        try:
            while chunk := stream.read(CHUNK):
                size += len(chunk)
                if size > settings.max_upload_bytes:
                    raise RequestError(413, f"the file is larger than the limit of {settings.max_upload_bytes} bytes",
                                       param="file", code="file_too_large")  # fmt: skip
                digest.update(chunk)
                partial.write(chunk)
            partial.close()
            rows = validate_jsonl_file(partial.name)
        except DatasetError as error:
            os.unlink(partial.name)
            raise RequestError(400, f"{filename} is not a valid fine-tuning file:\n{error}", param="file",
                               code="invalid_file") from None  # fmt: skip
        except BaseException:
            os.unlink(partial.name)
            raise
    file_id = new_id("file")
    path = data.file(file_id)
    shutil.move(partial.name, path)
    return file_store.add_file(db, file_id=file_id, owner=owner, filename=filename, purpose=purpose, size=size,
                               sha256=digest.hexdigest(), examples=len(rows), path=data.relative(path))  # fmt: skip


def submit_job(settings: Settings, db: Database, queue: JobQueue, owner: str, spec: JobSpec, *,
               suffix: str | None = None, metadata: dict | None = None, gpus: int = 0) -> Job:  # fmt: skip
    """Check that the model and files exist for this key, store the job, and queue it."""
    _check_model(db, spec.model, owner)
    for field in ("training_file", "validation_file"):
        file_id = getattr(spec, field)
        if file_id and file_store.get_file(db, file_id, owner) is None:
            raise RequestError(404, f"no file with id {file_id!r}", param=field, code="file_not_found")
    job = create_job(db, owner=owner, spec=spec.model_dump(mode="json"), queue=queue_name(gpus, settings.queue_prefix),
                     gpus=gpus, suffix=suffix, metadata=metadata)  # fmt: skip
    queue.send(job)
    return job


def _check_model(db: Database, model: str, owner: str) -> None:
    if model.startswith("ft:"):
        if get_fine_tuned_model(db, model, owner) is None:
            raise RequestError(404, f"no fine-tuned model {model!r}", param="model", code="model_not_found")
    elif model not in load_catalogue():
        known = ", ".join(sorted(load_catalogue()))
        raise RequestError(404, f"model {model!r} is not in the catalogue (known: {known})", param="model",
                           code="model_not_found")  # fmt: skip
