"""Whether a model is on this machine, or can be fetched, before anything waits for it.

A model is ready here when its files are: a folder (built-in models are made on first use, with no
network), or a hub model's snapshot in the Hugging Face cache (HF_HOME, shared by the API, the
workers and the model server in a deployment). One that is not can be fetched only when the hub is
allowed (HF_HUB_OFFLINE unset) and answers; otherwise a job or a completion for it is refused at once,
saying why and how to provide it, instead of failing after the hub's retries.

A download that is allowed is made once, by the first worker or model server that needs the model
(workers/model_download.py), holding a lock beside its progress record in the cache; the API reads
the record to show the download in /v1/models.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from lmtune.model_refs import ModelRef
from lmtune.problems import quote_id

HUB_PROBE_SECONDS = 3.0  # how long a connection to the hub may take before it counts as unreachable
HUB_PROBE_TTL = 30.0  # how long one probe's answer is reused
TRUE = {"1", "on", "yes", "true"}


class ModelUnavailable(Exception):
    pass


def local_folder(ref: ModelRef) -> Path | None:
    """The model's files on this machine: its folder, or its snapshot in the Hugging Face cache."""
    if Path(ref.source).is_dir():
        return Path(ref.source)
    if ref.builtin or Path(ref.source).is_absolute():  # made by the first process that runs it
        return None
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(ref.source, "config.json")
    except ValueError:  # not a hub id
        return None
    return Path(found).parent if isinstance(found, str) else None


def is_ready(ref: ModelRef) -> bool:
    """Its files are here (a built-in model counts: it is made without a network); a hub model's
    download that is under way, or failed, has put some of them in the cache, not all."""
    if ref.builtin or Path(ref.source).is_dir():
        return True
    return local_folder(ref) is not None and not download_record(ref.source).exists()


def check_available(ref: ModelRef, name: str) -> None:
    """ModelUnavailable saying why, when the model is not here and cannot be fetched."""
    for part in (ref, ref.base):
        if part is None or is_ready(part):
            continue
        if Path(part.source).is_absolute():
            raise ModelUnavailable(f"model {quote_id(name)}: its files are missing from the data folder")
        provide = (
            f"download it where the hub can be reached (`hf download {part.source}`) into this "
            "server's Hugging Face cache (HF_HOME)"
        )
        if offline():
            raise ModelUnavailable(
                f"model {quote_id(name)} ({part.source}) is not on this machine: it is not in the Hugging Face cache and "
                f"downloads are off (HF_HUB_OFFLINE); {provide}, or let the server download it (unset HF_HUB_OFFLINE)"
            )
        if not hub_reachable():
            raise ModelUnavailable(
                f"model {quote_id(name)} ({part.source}) is not on this machine and the hub ({hub_host()}) cannot be "
                f"reached from it; {provide}, or retry once the hub is reachable"
            )


def offline() -> bool:
    return any(os.environ.get(name, "").strip().lower() in TRUE for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_host() -> str:
    return urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or "huggingface.co"


_probed: dict[str, tuple[float, bool]] = {}
_probing = threading.Lock()


def hub_reachable() -> bool:
    """Whether a connection to the hub opens, asked at most every HUB_PROBE_TTL seconds."""
    host = hub_host()
    with _probing:
        at, answer = _probed.get(host, (float("-inf"), False))
        if time.monotonic() - at < HUB_PROBE_TTL:
            return answer
        try:
            with socket.create_connection((host, 443), timeout=HUB_PROBE_SECONDS):
                answer = True
        except OSError:
            answer = False
        _probed[host] = (time.monotonic(), answer)
        return answer


def download_record(source: str) -> Path:
    """Where the download of a hub model writes its progress (JSON), in the cache it fills; its
    lock file (`.lock` beside it) is held while the download runs."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE) / ".lmtune-downloads" / f"{source.replace('/', '--')}.json"


def download_progress(ref: ModelRef) -> dict | None:
    """The download of a model that is not here (not `is_ready`): {status: downloading | failed,
    bytes_done, bytes_total, error}, or None when none was started."""
    if ref.builtin or Path(ref.source).is_absolute():
        return None
    record = download_record(ref.source)
    try:
        progress = json.loads(record.read_text())
    except (OSError, ValueError):  # none, or replaced as we read it
        return None
    if progress["status"] == "downloading" and not _held(record.with_suffix(".lock")):
        progress.update(
            status="failed",
            error="the download stopped when its process ended; the next job or "
            "completion that needs the model starts it again",
        )
    return progress


def _held(lock: Path) -> bool:
    try:
        handle = os.open(lock, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(handle)  # closing it drops a lock taken here
