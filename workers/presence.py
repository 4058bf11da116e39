"""A worker tells the store it is alive and what it has (lmtune/store/workers.py): its queues,
GPUs with their memory, and the RAM it may use. Read without touching CUDA (nvidia-smi, the
cgroup), so the worker process never takes GPU memory its trainer needs."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from lmtune.store.workers import WorkerResources

CGROUP_MEMORY_LIMITS = (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))


def measure_resources(gpus: int) -> WorkerResources:
    return WorkerResources(gpus=gpus, gpu_memory_bytes=gpu_memory(gpus) if gpus else [], memory_bytes=usable_memory())


def usable_memory() -> int | None:
    """The machine's RAM, or the container's limit where that is lower."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None
    for limit in CGROUP_MEMORY_LIMITS:
        try:
            value = limit.read_text().strip()
        except OSError:
            continue
        if value.isdigit():
            total = min(total, int(value))
    return total


def gpu_memory(gpus: int) -> list[int] | None:
    """Each visible GPU's total memory in bytes, from nvidia-smi; None where it cannot tell."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sizes = [int(line.strip()) * 2**20 for line in done.stdout.splitlines() if line.strip().isdigit()]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        picked = [int(index) for index in visible.split(",") if index.strip().isdigit()]
        sizes = [sizes[index] for index in picked if index < len(sizes)]
    return sizes[:gpus] or None
