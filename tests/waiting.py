"""Waits driven by progress, not by wall-clock: a busy machine makes things slow, never wrong.

`wait_while_progressing` polls `probe` until `done(value)`; it fails only when the value returned by
`progress(value)` has not changed for `stall_seconds` (nothing moves at all), so a slow but moving
job is always waited for.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")

STALL_SECONDS = 120.0  # generous: two loaded cores can take this long between two steps of a subprocess start


def wait_while_progressing(probe: Callable[[], T], done: Callable[[T], bool], *, progress: Callable[[T], object] = repr,
                           stall_seconds: float = STALL_SECONDS, what: str = "the condition", interval: float = 0.2,
                           diagnose: Callable[[], str] = lambda: "") -> T:  # fmt: skip
    last_seen, last_change = object(), time.monotonic()
    while True:
        value = probe()
        if done(value):
            return value
        marker = progress(value)
        if marker != last_seen:
            last_seen, last_change = marker, time.monotonic()
        elif time.monotonic() - last_change > stall_seconds:
            raise AssertionError(f"never reached {what}: nothing changed for {stall_seconds:.0f} s (last: {marker!r})\n{diagnose()}")
        time.sleep(interval)


def cpu_ticks(pid: int) -> int:
    """CPU time a process and its waited-for children have used (clock ticks): moves while it works."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return -1
    return sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime


def wait_for_exit(process: subprocess.Popen, what: str = "the process to exit") -> int:
    """The exit status, waiting as long as the process keeps using CPU."""
    return wait_while_progressing(process.poll, lambda code: code is not None, progress=lambda _: cpu_ticks(process.pid),
                                  what=what)  # fmt: skip
