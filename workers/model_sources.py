"""A model reference made into a folder (or hub id) that `from_pretrained` loads: built-in models
are made on first use; a hub model is downloaded once, with its progress recorded (model_download);
a LoRA checkpoint, which holds only its adapter, is merged into its base."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from lmtune.model_refs import ModelRef, is_adapter_only
from workers.model_download import fetch


def loadable_source(ref: ModelRef, merged_folder: Path) -> str:
    """Where a job starting from `ref` loads its model; `merged_folder` receives a merged LoRA checkpoint."""
    if ref.builtin:
        return str(ensure_builtin_model(Path(ref.source)))
    if is_adapter_only(ref):
        if not (merged_folder / "config.json").exists():
            base = loadable_source(ref.base, merged_folder)  # a whole model (see lmtune.model_refs)
            _write_aside(merged_folder, lambda partial: merge_adapter(base, ref.adapter, partial))
        return str(merged_folder)
    fetch(ref.source)
    return ref.source


def ensure_builtin_model(folder: Path) -> Path:
    """Made once, aside and renamed into place, so concurrent processes never see half a model."""
    if not folder.exists():
        from workers.models.tiny_model import make_tiny_model

        _write_aside(folder, make_tiny_model)
    return folder


def merge_adapter(base: str, adapter: str, folder: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    PeftModel.from_pretrained(model, adapter).merge_and_unload().save_pretrained(folder)
    AutoTokenizer.from_pretrained(adapter).save_pretrained(folder)


def _write_aside(folder: Path, write) -> None:
    partial = folder.with_name(f".partial-{folder.name}-{os.getpid()}")
    write(partial)
    try:
        os.rename(partial, folder)
    except OSError:  # another process won the race
        shutil.rmtree(partial, ignore_errors=True)
