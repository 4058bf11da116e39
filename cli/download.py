"""Downloading a checkpoint or the final model file by file: resumable, and every file verified.

Each file is written to `<name>.part` beside its final name and renamed only once its sha256
matches the server's manifest; a later run continues a `.part` with an HTTP Range request and
skips files already verified. A `manifest.json` in the trainer's format is written last, so a
folder with one is complete.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from cli.client import ApiError, LmtuneClient, check
from lmtune.layout import file_hash, file_sha256, write_manifest

CHUNK = 1 << 16


@dataclass
class FileResult:
    path: str
    bytes: int
    resumed_from: int  # bytes already on disk when this run started it
    skipped: bool  # already complete and verified


class ChecksumMismatch(ApiError):
    pass


def folder_path(job_id: str, checkpoint_id: str | None) -> str:
    """The server path of a checkpoint's files, or of the final model's with no checkpoint."""
    base = f"/fine_tuning/jobs/{job_id}"
    return f"{base}/checkpoints/{checkpoint_id}/files" if checkpoint_id else f"{base}/final/files"


def download_folder(
    client: LmtuneClient,
    folder: str,
    output: Path,
    *,
    on_start: Callable[[int, int], None] = lambda total, done: None,
    on_bytes: Callable[[int], None] = lambda n: None,
) -> list[FileResult]:
    """Every file of `folder` (from `folder_path`) into `output`. `on_start(total_bytes, bytes_on_disk)`
    is called once with the listing; `on_bytes(n)` for each chunk received."""
    return download_files(client, list_folder(client, folder), output, on_start=on_start, on_bytes=on_bytes)


def list_folder(client: LmtuneClient, folder: str) -> list[dict]:
    """The files of `folder` with their sizes and sha256 (an ApiError when there is nothing to fetch:
    a final model not written yet)."""
    return client.json("GET", folder)["data"]


def download_files(
    client: LmtuneClient,
    entries: list[dict],
    output: Path,
    *,
    on_start: Callable[[int, int], None] = lambda total, done: None,
    on_bytes: Callable[[int], None] = lambda n: None,
) -> list[FileResult]:
    """The files `list_folder` gave, into `output` (as download_folder)."""
    output.mkdir(parents=True, exist_ok=True)
    targets = [(entry, _target(output, entry["path"])) for entry in entries]
    on_start(sum(entry["bytes"] for entry in entries), sum(_bytes_on_disk(target) for _, target in targets))
    results = [_download_file(client, entry, target, on_bytes) for entry, target in targets]
    write_manifest(output, [{key: entry[key] for key in ("path", "bytes", "sha256")} for entry in entries])
    return results


def _target(output: Path, relative: str) -> Path:
    parts = PurePosixPath(relative).parts
    if not parts or PurePosixPath(relative).is_absolute() or ".." in parts:
        raise ApiError(f"the server listed a file path that leaves the output folder: {relative!r}")
    return output.joinpath(*parts)


def _partial(target: Path) -> Path:
    return target.with_name(target.name + ".part")


def _bytes_on_disk(target: Path) -> int:
    for path in (target, _partial(target)):
        if path.exists():
            return path.stat().st_size
    return 0


def _download_file(client: LmtuneClient, entry: dict, target: Path, on_bytes: Callable[[int], None]) -> FileResult:
    size, expected = entry["bytes"], entry["sha256"]
    if target.exists():
        if target.stat().st_size == size and file_sha256(target) == expected:
            return FileResult(entry["path"], size, size, skipped=True)
        target.unlink()  # not the server's file: fetch it again
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = _partial(target)
    offset = partial.stat().st_size if partial.exists() else 0
    if offset > size:
        partial.unlink()
        offset = 0
    digest = file_hash(partial) if offset else hashlib.sha256()
    if offset < size:
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        with client.http.stream("GET", client.url(entry["url"]), headers={**client.headers, **headers}) as response:
            check(response)
            announced = response.headers.get("x-checksum-sha256")
            if announced and announced != expected:
                raise ChecksumMismatch(
                    f"{entry['path']} changed on the server while downloading; run the command again"
                )
            if response.status_code != 206 and offset:  # the server sent the whole file: start over
                offset, digest = 0, hashlib.sha256()
            with partial.open("ab" if offset else "wb") as sink:
                for chunk in response.iter_bytes(CHUNK):
                    sink.write(chunk)
                    digest.update(chunk)
                    on_bytes(len(chunk))
    if digest.hexdigest() != expected:
        partial.unlink()
        raise ChecksumMismatch(
            f"{entry['path']}: sha256 {digest.hexdigest()} does not match the server's {expected}; "
            "the partial file was removed, run the command again"
        )
    partial.replace(target)
    return FileResult(entry["path"], size, offset, skipped=False)
