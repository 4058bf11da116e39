"""The children of `lmtune up` (its worker and its model server), started again when they die."""

from __future__ import annotations

import os
import subprocess
import threading
import time

from workers.processes import die_with_parent

WORKER_NICENESS = 10  # `lmtune up`'s worker and trainer, beside the API on one machine


class RestartingChild:
    """Keeps one child process alive: one that dies is started again (a worker's job continues from
    its last checkpoint once the new worker sees the lapsed lease)."""

    def __init__(self, command: list[str], on_restart=None, nice: int = 0, pass_fds: tuple[int, ...] = ()):
        self.command = command
        self._start = lambda: subprocess.Popen(command, preexec_fn=lambda: _child_setup(nice), pass_fds=pass_fds)
        self.on_restart = on_restart or (lambda code: None)
        self._lock = threading.Lock()
        self._stopping = False
        self.process = self._start()
        threading.Thread(target=self._watch, daemon=True, name="restarting-child").start()

    def _watch(self) -> None:
        while True:
            time.sleep(1.0)
            with self._lock:
                if self._stopping:
                    return
                if self.process.poll() is not None:
                    self.on_restart(self.process.returncode)
                    self.process = self._start()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self.process.terminate()  # a worker hands its running job back on SIGTERM
        self.process.wait()


def _child_setup(nice: int) -> None:
    die_with_parent()
    os.nice(nice)  # inherited by the child's own children (the trainer)
