"""The gang of workers that runs one attempt of a multi-node job (`nodes` > 1): all of them or none.

A worker of the job's queue claims it as any job (`claim_next_job`: the attempt, its lease) and,
once the job's inputs are ready, hosts the gang as rank 0 with its rendezvous address
(`host_gang`). Other workers of the queue, woken by the doorbells rank 0 rings, join the first gang
of their queue that is not full (`join_gang`), one at a time under the job row's lock, each taking
the next node rank. Training starts once `nodes` workers are in; a gang not full within
LMTUNE_GANG_WAIT_SECONDS is handed back to the queue (`disband`, no failure counted) and its members,
whose attempt no longer holds the job (`still_held`), go back to waiting for work.

Rank 0 holds the job's lease and records every outcome; the members only check that the attempt
still holds the job, through the same fence every write of an attempt goes through.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, exists, func, select

from lmtune.store.database import Database
from lmtune.store.jobs import Note, StaleAttempt, fenced, finish_attempt, get_job, now
from lmtune.store.models import GangMember, Job, JobStatus


@dataclass(frozen=True)
class Member:
    rank: int
    worker: str
    address: str | None  # rank 0's: host:port of the rendezvous


def host_gang(db: Database, job_id: str, attempt: int, worker: str, address: str) -> None:
    """Rank 0 of this attempt's gang, which others may join from now on; the gangs of earlier attempts go."""
    with db.session() as session:
        fenced(session, job_id, attempt)
        session.execute(delete(GangMember).where(GangMember.job_id == job_id))
        session.add(GangMember(job_id=job_id, rank=0, attempt=attempt, worker=worker, address=address, joined_at=now()))


def join_gang(db: Database, queue: str, worker: str) -> tuple[Job, int, int] | None:
    """A place in the oldest gang of `queue` still gathering: (job, attempt, node rank), or None."""
    same_attempt = (GangMember.job_id == Job.id) & (GangMember.attempt == Job.attempt)
    joined = select(func.count()).where(same_attempt).scalar_subquery()
    hosted = exists().where(same_attempt, GangMember.rank == 0)
    with db.session() as session:
        candidates = session.execute(
            select(Job.id, Job.attempt)
            .where(Job.queue == queue, Job.status == JobStatus.RUNNING, Job.nodes > 1, hosted, joined < Job.nodes)
            .order_by(Job.id)
            .limit(5)
        ).all()
    for job_id, attempt in candidates:
        with db.session() as session:
            try:
                job = fenced(session, job_id, attempt)  # the row lock: joins to one gang go one at a time
            except StaleAttempt:
                continue
            workers = session.scalars(
                select(GangMember.worker).where(GangMember.job_id == job_id, GangMember.attempt == attempt)
            ).all()
            if len(workers) >= job.nodes or worker in workers:
                continue
            rank = len(workers)
            session.add(
                GangMember(job_id=job_id, rank=rank, attempt=attempt, worker=worker, address=None, joined_at=now())
            )
        return get_job(db, job_id), attempt, rank
    return None


def gang_members(db: Database, job_id: str, attempt: int) -> list[Member]:
    """The workers in this attempt's gang, by rank."""
    with db.session() as session:
        rows = session.scalars(
            select(GangMember)
            .where(GangMember.job_id == job_id, GangMember.attempt == attempt)
            .order_by(GangMember.rank)
        ).all()
        return [Member(row.rank, row.worker, row.address) for row in rows]


def still_held(db: Database, job_id: str, attempt: int, lease_seconds: float) -> None:
    """A member's beat (workers.lease_keeper): raises StaleAttempt once the attempt no longer holds
    the job; the lease itself is rank 0's to renew."""
    with db.session() as session:
        fenced(session, job_id, attempt)


def disband(db: Database, job_id: str, attempt: int, joined: int, waited: float) -> Job:
    """A gang not full in time: the job goes back to the queue (not a failure), the members leave."""
    job = get_job(db, job_id)
    note = Note(
        f"Only {joined} of the {job.nodes} workers this job needs joined within {waited:.0f} s; it is queued again",
        "warn",
    )
    return finish_attempt(db, job_id, attempt, JobStatus.QUEUED, note)
