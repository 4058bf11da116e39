"""Per-key quotas: jobs queued or running at once, and bytes stored (files and job outputs: a job's
run folder with its checkpoints, final model and exports).

A request over a quota gets 429 `quota_exceeded`, with the limit, the current use and what to free.
Use is read from stored rows (file sizes, and each job's run-folder size as the worker last measured
it), never by walking the disk on a request.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from lmtune.disk import human_size
from lmtune.errors import RequestError
from lmtune.settings import Settings
from lmtune.store import files as file_store
from lmtune.store import jobs as job_store
from lmtune.store.database import Database

CODE = "quota_exceeded"


def too_many_jobs(limit: int, active: list[str]) -> RequestError:
    return RequestError(
        429,
        f"quota exceeded: this API key has {len(active)} jobs queued or running ({', '.join(active)}) and may have "
        f"{limit} at once; wait for one to finish, or cancel one (POST /v1/fine_tuning/jobs/{{id}}/cancel) or "
        "pause one (POST /v1/fine_tuning/jobs/{id}/pause)",
        code=CODE,
    )


@dataclass(frozen=True)
class StorageUse:
    files: int
    outputs: int
    largest_files: list[tuple[str, int]]
    largest_outputs: list[tuple[str, int]]

    @property
    def total(self) -> int:
        return self.files + self.outputs


def storage_use(db: Database, owner: str) -> StorageUse:
    files, largest_files = file_store.stored_bytes(db, owner)
    outputs, largest_outputs = job_store.output_bytes(db, owner)
    return StorageUse(files, outputs, largest_files, largest_outputs)


def check_storage(
    settings: Settings, db: Database, owner: str, adding: int = 0, what: str = "this upload adds"
) -> None:
    """Refuse when the key is at its storage quota, or when `adding` more bytes (`what` adds) would pass it."""
    limit, use = settings.quota_storage_bytes, storage_use(db, owner)
    if use.total < limit and use.total + adding <= limit:
        return
    adds = f"; {what} {human_size(adding)}" if adding else ""
    message = (
        f"quota exceeded: this API key stores {human_size(use.total)} (files {human_size(use.files)}, job "
        f"outputs {human_size(use.outputs)}) of the {human_size(limit)} allowed{adds}"
    )
    if use.largest_files:
        message += (
            f"; free space by deleting files (DELETE /v1/files/{{id}}), the largest: {_listed(use.largest_files)}"
        )
    if use.largest_outputs:
        message += (
            f"; or ended jobs with their checkpoints and models (DELETE /v1/fine_tuning/jobs/{{id}}), the largest: "
            f"{_listed(use.largest_outputs)}"
        )
    raise RequestError(429, message, code=CODE)


def folder_bytes(folder: Path) -> int:
    """Bytes in the regular files under `folder` (a job's run folder: a few dozen files)."""
    total = 0
    for root, _, names in os.walk(folder):
        for name in names:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:  # pruned by the trainer while we walk
                pass
    return total


def _listed(items: list[tuple[str, int]]) -> str:
    return ", ".join(f"{item_id} ({human_size(size)})" for item_id, size in items)
