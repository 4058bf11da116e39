"""Starting N data-parallel copies of a command on this machine, as torchrun does for one node.

Written out rather than delegated to torchrun because the caller needs two things it hides:
SIGTERM forwarded to every rank (each finishes its step and checkpoints), and the ranks' own exit
status, so that "every rank paused" is told apart from "a rank failed".
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

from workers.processes import die_with_parent

GRACE_SECONDS = 30


def launch(command: list[str], num_processes: int, paused_status: int, use_cpu: bool) -> int:
    port = _free_port()
    ranks = []
    for rank in range(num_processes):
        env = dict(os.environ)
        env.update(
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE=str(num_processes),
            LOCAL_WORLD_SIZE=str(num_processes),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // num_processes))),
        )
        if use_cpu:
            env["ACCELERATE_USE_CPU"] = "1"  # gloo process group on the CPU
        ranks.append(subprocess.Popen(command, env=env, preexec_fn=die_with_parent))

    def forward(signum, frame):
        for process in ranks:
            if process.poll() is None:
                process.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        return _wait(ranks, paused_status)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _wait(ranks: list[subprocess.Popen], paused_status: int) -> int:
    while True:
        codes = [process.poll() for process in ranks]
        failed = [code for code in codes if code not in (None, 0, paused_status)]
        if failed:
            # the others would wait forever in a collective with the dead rank
            _stop(ranks)
            return failed[0]
        if all(code is not None for code in codes):
            return paused_status if paused_status in codes else 0
        time.sleep(0.2)


def _stop(ranks: list[subprocess.Popen]) -> None:
    for process in ranks:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + GRACE_SECONDS
    for process in ranks:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
