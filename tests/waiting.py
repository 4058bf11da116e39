"""Waits driven by progress, not by wall-clock: a busy machine makes things slow, never wrong.

`wait_while_progressing` polls `probe` until `done(value)`; it fails only when the value returned by
`progress(value)` has not changed for `stall_seconds` (nothing moves at all), so a slow but moving
job is always waited for.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import TypeVar

import psutil

T = TypeVar("T")

STALL_SECONDS = 120.0  # generous: two loaded cores can take this long between two steps of a subprocess start


def wait_while_progressing(
    probe: Callable[[], T],
    done: Callable[[T], bool],
    *,
    progress: Callable[[T], object] = repr,
    stall_seconds: float = STALL_SECONDS,
    what: str = "the condition",
    interval: float = 0.2,
    diagnose: Callable[[], str] = lambda: "",
) -> T:
    last_seen, last_change = object(), time.monotonic()
    while True:
        value = probe()
        if done(value):
            return value
        marker = progress(value)
        if marker != last_seen:
            last_seen, last_change = marker, time.monotonic()
        elif time.monotonic() - last_change > stall_seconds:
            raise AssertionError(
                f"never reached {what}: nothing changed for {stall_seconds:.0f} s (last: {marker!r})\n{diagnose()}"
            )
        time.sleep(interval)


def working(*pids: int, quantum: float = 5.0) -> int:
    """A count that moves while these processes or any of their descendants compute (CPU seconds in
    steps of `quantum`): a trainer importing torch on a loaded machine shows no other sign of life,
    and a process that only polls moves it too rarely to hide a stall."""
    seconds = 0.0
    for pid in pids:
        try:
            process = psutil.Process(pid)
            for member in [process, *process.children(recursive=True)]:
                times = member.cpu_times()
                seconds += times.user + times.system
        except psutil.Error:  # gone while we looked
            continue
    return int(seconds // quantum)


def wait_for_exit(process: subprocess.Popen, what: str = "the process to exit") -> int:
    """The exit status, waiting as long as the process keeps working."""
    return wait_while_progressing(
        process.poll, lambda code: code is not None, progress=lambda _: working(process.pid), what=what
    )
