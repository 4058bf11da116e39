"""The run-folder contract: where a training run keeps its files, how its checkpoints are named and
found complete, how files are hashed and listed in a manifest, and how a file is replaced whole.
Shared by the trainer, the worker, the API and the CLI's downloads, so that each reads what the
other writes the same way.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

# In every checkpoint and final folder, written last: each file's path, size and sha256. A folder
# with its final name and a manifest is complete.
MANIFEST = "manifest.json"
_CHECKPOINT_NAME = re.compile(r"^step-(\d{6,})$")
ADAPTER_DIR = "adapter"  # a LoRA job's final/ keeps its adapter here, beside the merged model
ADAPTER_CONFIG = "adapter_config.json"  # a LoRA adapter's files: in a checkpoint, and in final/adapter/
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}"


def complete_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(step, path) of every complete checkpoint in a run's checkpoints folder, oldest first."""
    if not folder.is_dir():
        return []
    found = []
    for child in folder.iterdir():
        match = _CHECKPOINT_NAME.match(child.name)
        if match and (child / MANIFEST).is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def latest_checkpoint(folder: Path) -> tuple[int, Path] | None:
    checkpoints = complete_checkpoints(folder)
    return checkpoints[-1] if checkpoints else None


def file_hash(path: Path):
    """The sha256 of a file's bytes, as a hash object (a download that goes on adds the rest to it)."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256")


def file_sha256(path: Path) -> str:
    return file_hash(path).hexdigest()


def read_manifest(folder: Path) -> dict[str, dict]:
    """The manifest's entries by relative path: {path: {path, bytes, sha256}}."""
    return {entry["path"]: entry for entry in json.loads((folder / MANIFEST).read_text())["files"]}


def write_manifest(folder: Path, entries: list[dict] | None = None, leave_out: str | None = None) -> None:
    """The folder's manifest, written last: `entries` ({path, bytes, sha256}: a download's, as the
    server listed them), by default every file of the folder, hashed, but those under its subfolder
    `leave_out` (kept in the folder, never listed or served)."""
    if entries is None:
        files = sorted(
            p
            for p in folder.rglob("*")
            if p.is_file() and p.name != MANIFEST and not (leave_out and p.relative_to(folder).parts[0] == leave_out)
        )
        entries = [
            {"path": str(p.relative_to(folder)), "bytes": p.stat().st_size, "sha256": file_sha256(p)} for p in files
        ]
    write_atomically(folder / MANIFEST, json.dumps({"files": entries}, indent=2))


def write_atomically(
    path: Path,
    content: str | bytes | Callable[[BinaryIO], object],
    *,
    before: Callable[[], object] = lambda: None,
    private: bool = False,
) -> None:
    """`path` replaced whole or not at all: `content` (text, bytes, or a function that writes into the
    open file) goes to a temporary name of its own beside it (the pid and a random part: concurrent
    writers never share one), is flushed to disk, `before()` is called (a fence check), then it is
    renamed into place. A crash or a full disk leaves the old file, never a cut one. `private`: mode
    0600 from the start, never readable by others, not even briefly."""
    partial = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.partial")
    try:
        with os.fdopen(
            os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o666), "wb"
        ) as handle:
            if callable(content):
                content(handle)
            else:
                handle.write(content.encode() if isinstance(content, str) else content)
            handle.flush()
            os.fsync(handle.fileno())
        before()
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


@dataclass(frozen=True)
class RunLayout:
    root: Path

    @property
    def spec(self) -> Path:
        return self.root / "spec.json"  # the job as given; a resume must match it

    @property
    def run(self) -> Path:
        return self.root / "run.json"  # resolved hyperparameters and dataset counts

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def samples(self) -> Path:
        return self.root / "samples.jsonl"  # one line per checkpoint: the model's answers to the sample prompts

    @property
    def notices(self) -> Path:
        return self.root / "notices.jsonl"  # what the trainer decided that the user should hear of (early stop)

    @property
    def reference_logps(self) -> Path:
        # DPO: the starting model's log-probabilities of every pair, computed once (a resume reuses them)
        return self.root / "reference_logps.pt"

    @property
    def loss_plot(self) -> Path:
        return self.root / "loss.png"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def final(self) -> Path:
        return self.root / "final"

    @property
    def exports(self) -> Path:
        return self.root / "exports"  # the model in other formats (lmtune/exports.py): exports/<name>/

    @property
    def start_model(self) -> Path:
        return self.root / "start-model"  # a LoRA checkpoint the job starts from, merged into its base

    def judge_model(self, model_id: str) -> Path:
        # a model grader's judge that is a LoRA checkpoint, merged into its base for the trainer
        return self.root / "judge-models" / re.sub(r"[^A-Za-z0-9._-]+", "_", model_id)

    @property
    def eval_definition(self) -> Path:
        return self.root / "eval.json"  # training.eval_id's eval, written by the worker (lmtune.training_eval)

    @property
    def error(self) -> Path:
        return self.root / "error.json"  # why a failed run failed: {code, message}

    @property
    def fence(self) -> Path:
        return self.root / "attempt"  # the attempt that owns the folder (lmtune.fence)

    @property
    def result(self) -> Path:
        return self.root / "result.json"  # written last: its presence means the run finished


@dataclass(frozen=True)
class DataLayout:
    """The data folder (LMTUNE_DATA_DIR). One folder, mounted at the same path on every machine of
    a deployment (API and workers), holds:

        files/<file-id>.jsonl       uploaded files, stored under server-made names
        jobs/<job-id>/              a job's run folder (RunLayout): metrics, checkpoints, final/
        jobs/<job-id>/job.json      the spec the worker hands the trainer (paths resolved)
        jobs/<job-id>/trainer.log   the trainer's output
        models/<name>/              built-in catalogue models, made on first use
        lmtune.db, broker.sqlite    SQLite store and embedded broker, when no DATABASE_URL/REDIS_URL
        api-key                     the local key's secret (cli.local_key), mode 0600
    """

    root: Path

    @property
    def files(self) -> Path:
        return self.root / "files"

    def file(self, file_id: str) -> Path:
        return self.files / f"{file_id}.jsonl"

    def job(self, job_id: str) -> RunLayout:
        return RunLayout(self.root / "jobs" / job_id)

    def trainer_spec(self, job_id: str) -> Path:
        return self.root / "jobs" / job_id / "job.json"

    def trainer_log(self, job_id: str) -> Path:
        return self.root / "jobs" / job_id / "trainer.log"

    def builtin_model(self, name: str) -> Path:
        return self.root / "models" / name

    def relative(self, path: Path) -> str:
        return str(path.relative_to(self.root))

    def resolve(self, relative: str) -> Path:
        """A stored relative path, confined to the data folder."""
        path = (self.root / relative).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"{relative!r} leaves the data folder")
        return path
