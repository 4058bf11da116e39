"""One attempt of a multi-node job, as one node of its gang (lmtune.store.gangs, docs/distributed.md).

Rank 0 (the worker that claimed the job) prepares the inputs as for any job, hosts the gang with a
free port on its node address for the c10d rendezvous, rings the queue once per missing node and
waits for the gang to fill. Every node then starts the same trainer command with its node rank and
rank 0's address; the trainers read the job's data and write the run folder in the shared data
folder, and the main process (global rank 0) writes what is published. Rank 0 supervises as for a
one-machine job; a member only keeps its trainer while the attempt holds the job.
"""

from __future__ import annotations

import logging
import socket
import time

from lmtune.settings import Settings
from lmtune.store.gangs import Member, disband, gang_members, host_gang, join_gang, still_held
from lmtune.store.jobs import StaleAttempt
from lmtune.store.models import Job
from workers.lease_keeper import LeaseKeeper
from workers.ports import free_port
from workers.supervision import POLL_SECONDS, supervise
from workers.training.launcher import NODE_RANK_ENV, NODES_ENV

log = logging.getLogger(__name__)


def node_address(settings: Settings) -> str:
    """Where the other nodes reach this worker: LMTUNE_NODE_ADDRESS, else what the host name resolves to."""
    return settings.node_address or socket.gethostbyname(socket.gethostname())


def gather(ctx, job: Job, attempt: int, lease: LeaseKeeper) -> dict | None:
    """Rank 0: host the gang and wait for it to fill; the trainer's gang environment, or None when
    the gang did not fill in time and the job went back to the queue."""
    address = node_address(ctx.settings)
    host_gang(ctx.db, job.id, attempt, ctx.worker_id, f"{address}:{free_port(address)}")
    for _ in range(job.nodes - 1):  # one doorbell per missing node (a broker that is down: the wait ends it)
        ctx.queue.send(job)
    started = time.monotonic()
    while (members := gang_members(ctx.db, job.id, attempt)) and len(members) < job.nodes:
        lease.check()
        if ctx.shutting_down.is_set() or time.monotonic() - started > ctx.settings.gang_wait_seconds:
            back = disband(ctx.db, job.id, attempt, len(members), time.monotonic() - started)
            ctx.queue.send(back)
            return None
        time.sleep(POLL_SECONDS)
    return gang_env(members, 0, job.nodes)


def gang_env(members: list[Member], rank: int, nodes: int) -> dict:
    host, port = members[0].address.rsplit(":", 1)
    return {NODES_ENV: str(nodes), NODE_RANK_ENV: str(rank), "MASTER_ADDR": host, "MASTER_PORT": port}


def run_as_member(ctx, queue: str) -> bool:
    """Join the first gang of `queue` still gathering, if any, and run this node's part of it; True if one was joined."""
    joined = join_gang(ctx.db, queue, ctx.worker_id)
    if joined is None:
        return False
    job, attempt, rank = joined
    log.info("joined the gang of job %s (attempt %d) as node %d of %d", job.id, attempt, rank, job.nodes)
    beat = ctx.settings.lease_seconds
    try:
        with LeaseKeeper(ctx.db, job.id, attempt, beat, beat=still_held) as held:
            while len(members := gang_members(ctx.db, job.id, attempt)) < job.nodes:
                held.check()
                time.sleep(POLL_SECONDS)
            run = ctx.data.job(job.id)
            command = ctx.trainer_command(
                ctx.data.trainer_spec(job.id), run.root, job.gpus, model_name=job.spec["model"]
            )
            trainer_log = ctx.data.trainer_log(job.id).with_name(f"trainer-node{rank}.log")
            env = gang_env(members, rank, job.nodes)
            ending = supervise(ctx.settings, command, trainer_log, attempt, None, held, ctx.shutting_down, env)
            log.info("node %d of job %s: its trainer exited with status %d", rank, job.id, ending.code)
    except StaleAttempt:
        log.info("the gang of job %s (attempt %d) ended; node %d leaves it", job.id, attempt, rank)
    return True
