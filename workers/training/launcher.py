"""Starting N data-parallel copies of a command on this machine, as torchrun does for one node.

Written out rather than delegated to torchrun because the caller needs two things it hides:
SIGTERM forwarded to every rank (each finishes its step and checkpoints), and the ranks' own exit
status, so that "every rank paused" is told apart from "a rank failed".

A node of a multi-node gang (docs/distributed.md) is told its place by the worker in NODES_ENV and
NODE_RANK_ENV, and rank 0's c10d rendezvous (its TCPStore) in MASTER_ADDR and MASTER_PORT; its
processes take global ranks node_rank x N + local rank. Collectives and the rendezvous give up
after COLLECTIVE_TIMEOUT_ENV seconds, so a lost node stops the others instead of hanging them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from datetime import timedelta

from workers.ports import free_port
from workers.processes import die_with_parent

GRACE_SECONDS = 30
NODES_ENV = "LMTUNE_NODES"
NODE_RANK_ENV = "LMTUNE_NODE_RANK"
COLLECTIVE_TIMEOUT_ENV = "LMTUNE_COLLECTIVE_TIMEOUT_SECONDS"


def nodes() -> int:
    """The machines this run spans (1 unless a worker started it as a node of a gang)."""
    return int(os.environ.get(NODES_ENV, "1"))


def started_as_rank() -> bool:
    """This process is one rank of a launch (its LOCAL_RANK set), never a launcher itself."""
    return "LOCAL_RANK" in os.environ


def collective_timeout(default: float = 600) -> timedelta:
    return timedelta(seconds=float(os.environ.get(COLLECTIVE_TIMEOUT_ENV, default)))


def lost_peer(error: BaseException) -> bool:
    """A collective or the rendezvous of a run of several processes failed: another process, or its
    node, died or was cut off. Not the job's fault: the worker runs it again from its checkpoint.
    Gloo and NCCL raise these as plain RuntimeErrors, told apart by their origin in the message."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return False
    return isinstance(error, dist.DistError) or (
        isinstance(error, RuntimeError) and any(origin in str(error) for origin in ("/gloo/", "NCCL", "TCPStore"))
    )


def launch(command: list[str], num_processes: int, paused_status: int, use_cpu: bool) -> int:
    node_rank = int(os.environ.get(NODE_RANK_ENV, "0"))
    if nodes() > 1:
        address, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    else:
        address, port = "127.0.0.1", free_port()
    ranks = []
    for rank in range(num_processes):
        # a rank is one process, never a launcher again
        env = {key: value for key, value in os.environ.items() if key not in (NODES_ENV, NODE_RANK_ENV)}
        env.update(
            RANK=str(node_rank * num_processes + rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE=str(nodes() * num_processes),
            LOCAL_WORLD_SIZE=str(num_processes),
            MASTER_ADDR=address,
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
