"""Which workers are alive, what queues they take from and what memory they have: each worker
renews its row from its sweep thread; a row not renewed in time is a worker gone. The estimate
compares a job's memory with this, and /metrics counts live workers by queue."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, select

from lmtune.store.database import Database
from lmtune.store.models import WorkerPresence

FORGET_AFTER_SECONDS = 86400  # rows of workers gone this long are removed by the others


@dataclass(frozen=True)
class WorkerResources:
    gpus: int
    gpu_memory_bytes: list[int] | None  # each GPU's total, when the worker could tell
    memory_bytes: int | None  # RAM it may use (its cgroup's limit, or the machine's)


def announce_worker(
    db: Database, worker_id: str, queues: list[str], resources: WorkerResources, now: float, lasts: float
) -> None:
    """This worker is alive until `now + lasts` (renewed before then)."""
    with db.session() as session:
        row = session.get(WorkerPresence, worker_id)
        if row is None:
            row = WorkerPresence(id=worker_id, started_at=int(now))
            session.add(row)
        row.queues, row.gpus = queues, resources.gpus
        row.gpu_memory_bytes, row.memory_bytes = resources.gpu_memory_bytes, resources.memory_bytes
        row.expires_at = now + lasts
        session.execute(delete(WorkerPresence).where(WorkerPresence.expires_at < now - FORGET_AFTER_SECONDS))


def forget_worker(db: Database, worker_id: str) -> None:
    with db.session() as session:
        session.execute(delete(WorkerPresence).where(WorkerPresence.id == worker_id))


def live_workers(db: Database, now: float, queue: str | None = None) -> list[WorkerPresence]:
    with db.session() as session:
        rows = session.scalars(select(WorkerPresence).where(WorkerPresence.expires_at >= now)).all()
    return [row for row in rows if queue is None or queue in row.queues]
