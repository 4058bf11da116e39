"""The model catalogue (configs/models.yaml): which names a job may start from, and their source."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

DEFAULT_FILE = Path(__file__).resolve().parents[1] / "configs" / "models.yaml"


@dataclass(frozen=True)
class CatalogueEntry:
    name: str
    source: str | None  # hub id or local folder
    builtin: str | None  # "tiny": made locally on first use
    description: str = ""


def load_catalogue(path: Path | None = None) -> dict[str, CatalogueEntry]:
    """Parsed again only when the file changes (the API lists it on every GET /v1/models)."""
    path = path or Path(os.environ.get("LMTUNE_MODELS_FILE", DEFAULT_FILE))
    stat = path.stat()
    return dict(_parse(path, stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=8)
def _parse(path: Path, mtime_ns: int, size: int) -> dict[str, CatalogueEntry]:
    data = yaml.safe_load(path.read_text()) or {}
    entries = {}
    for name, entry in (data.get("models") or {}).items():
        if bool(entry.get("source")) == bool(entry.get("builtin")):
            raise ValueError(f"{path}: model {name!r} needs exactly one of source or builtin")
        entries[name] = CatalogueEntry(name, entry.get("source"), entry.get("builtin"), entry.get("description", ""))
    return entries
