"""Renews an attempt's lease from claim to finish, in a thread, whatever the attempt is busy with."""

from __future__ import annotations

import logging
import threading

from lmtune.store.database import Database
from lmtune.store.jobs import StaleAttempt, heartbeat

log = logging.getLogger(__name__)


class LeaseKeeper:
    def __init__(self, db: Database, job_id: str, attempt: int, lease_seconds: float, beat=heartbeat):
        """`beat(db, id, attempt, lease_seconds)` renews the lease (a job's by default; an eval run's)."""
        self.db, self.job_id, self.attempt, self.lease_seconds = db, job_id, attempt, lease_seconds
        self.beat = beat
        self.stale = False
        self.control = None  # what the last renewal answered: Control(cancel, pause) for a job
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"lease-{job_id}")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.control = self.beat(self.db, self.job_id, self.attempt, self.lease_seconds)
            except StaleAttempt:
                self.stale = True
                return
            except Exception as error:  # a database blip: the lease has slack for a few missed beats
                log.warning("heartbeat of job %s failed: %s: %s", self.job_id, type(error).__name__, error)
            self._stop.wait(self.lease_seconds / 4)

    def check(self) -> None:
        """Raises StaleAttempt once another attempt holds the job."""
        if self.stale:
            raise StaleAttempt(f"attempt {self.attempt} of job {self.job_id} lost its lease")

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()
