"""A process's peak resident memory, from /proc (Linux).

Not `resource.getrusage(...).ru_maxrss`: Linux carries the peak over `exec`, so a child started by a
large parent (pytest after many tests) would report the parent's peak instead of its own.
"""

from __future__ import annotations

from pathlib import Path


def peak_rss_mb(pid: int | str = "self") -> float:
    """VmHWM of the process: the most memory it has held resident, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")
