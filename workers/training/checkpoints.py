"""Checkpoint folders: written aside, hashed, and renamed into place whole.

OUTPUT/checkpoints/step-000120/
    model.safetensors, config.json, tokenizer files   the model in Hugging Face format
    (adapter_model.safetensors, adapter_config.json   instead, for a LoRA run)
    training_state/                                    Accelerate's save_state: optimizer, scheduler, RNG
                                                       (FSDP: per-process shards, left out of the manifest)
    trainer_state.json                                 step, epoch, tokens, elapsed time
    manifest.json                                      each file's size and sha256; written last
A folder is complete when it carries its final name; a crash leaves only `.partial-*` folders,
which are never read and are removed by the next write.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from lmtune.layout import complete_checkpoints

TRAINER_STATE = "trainer_state.json"
TRAINING_STATE_DIR = "training_state"


def partial_folder(parent: Path, name: str) -> Path:
    return parent / f".partial-{name}"


def prune_checkpoints(folder: Path, keep: int, protected: set[int] = frozenset()) -> None:
    """Remove all but the newest `keep` and the `protected` steps (the best one, with keep_best)."""
    for step, path in complete_checkpoints(folder)[:-keep]:
        if step not in protected:
            shutil.rmtree(path)


def remove_partials(folder: Path) -> None:
    if folder.is_dir():
        for child in folder.glob(".partial-*"):
            shutil.rmtree(child, ignore_errors=True)


def publish(partial: Path, final: Path) -> None:
    """fsync every file, then rename the folder into place: the name appears only when all is on disk."""
    for path in partial.rglob("*"):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
    if final.exists():  # a repeated delivery redoing a step: the new copy replaces the old whole
        shutil.rmtree(final)
    os.rename(partial, final)
    _fsync_dir(final.parent)


def _fsync_dir(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def read_trainer_state(checkpoint: Path) -> dict:
    return json.loads((checkpoint / TRAINER_STATE).read_text())
