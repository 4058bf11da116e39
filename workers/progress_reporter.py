"""Recording what a running trainer writes: metrics, progress, sample sets, notices, checkpoints.
Apart from supervision, so a database that does not answer delays the records and never touches
the training.

Each poll reads what is new in the run folder and records all of it in one transaction. While the
database is unreachable the rows wait here and polls back off; once it answers, everything missed
is recorded in one go.
"""

from __future__ import annotations

import json
import logging
import time

from lmtune.backoff import pause_after
from lmtune.layout import DataLayout, complete_checkpoints
from lmtune.quotas import folder_bytes
from lmtune.store.database import Database, is_unreachable
from lmtune.store.history import Report, record_report
from lmtune.store.jobs import Control, new_event
from workers.run_follower import RunFollower

log = logging.getLogger(__name__)
# a metrics event carries the step and every measured value of the objective (train_loss,
# valid_loss, ... and the objective's own metrics), whatever the training method
EVENT_KEYS = ("step", "total_steps")
EVENT_PREFIXES = ("train_", "valid_", "full_valid_")
FIRST_BACKOFF_SECONDS, MAX_BACKOFF_SECONDS = 0.5, 5.0


class ProgressReporter:
    def __init__(self, db: Database, data: DataLayout, job_id: str, attempt: int):
        self.db, self.data, self.job_id, self.attempt = db, data, job_id, attempt
        self.follower = RunFollower(data.job(job_id))
        self.control = Control(cancel=False, pause=False)  # the last answer; kept while unreachable
        self._pending: dict[int, dict] = {}  # rows read, not yet recorded, by step
        self._pending_messages: list[dict] = []  # sample sets and notices read, not yet recorded
        self._recorded_checkpoints: set[int] | None = None
        self._on_disk: set[int] = set()  # complete checkpoints as the last report saw them
        self._next_try, self._backoff, self._failures = 0.0, 0.0, 0

    def poll(self) -> Control:
        """Record what is new, unless backing off; raises StaleAttempt once the attempt is superseded."""
        self._pending.update((row["step"], row) for row in self.follower.new_metrics())
        self._pending_messages += self.follower.new_messages()
        if time.monotonic() < self._next_try:
            return self.control
        try:
            self.control = record_report(self.db, self.job_id, self.attempt, self._report())
        except Exception as error:
            if not is_unreachable(error):
                raise
            self._failures += 1
            self._backoff = pause_after(self._failures, FIRST_BACKOFF_SECONDS, MAX_BACKOFF_SECONDS)
            self._next_try = time.monotonic() + self._backoff
            log.warning(
                "job %s: the database is unreachable (%s); %d metric rows wait, next try in %.1f s",
                self.job_id,
                type(error).__name__,
                len(self._pending),
                self._backoff,
            )
            return self.control
        self._pending.clear()
        self._pending_messages.clear()
        self._recorded_checkpoints = self._on_disk
        self._next_try, self._backoff, self._failures = 0.0, 0.0, 0
        return self.control

    def flush(self, between) -> Control:
        """Record all the exited trainer wrote, however long the database takes to answer; `between()`
        runs before each new try (the lease check ends them once another attempt holds the job)."""
        while True:
            self._next_try = 0.0
            control = self.poll()
            on_disk = {step for step, _ in complete_checkpoints(self.follower.layout.checkpoints)}
            if not self._pending and not self._pending_messages and self._recorded_checkpoints == on_disk:
                return control
            time.sleep(self._backoff)
            between()

    def _report(self) -> Report:
        rows = [self._pending[step] for step in sorted(self._pending)]
        report = Report(
            metric_events=[
                new_event(self.job_id, _step_message(row), type="metrics", data=_event_data(row), step=row["step"])
                for row in rows
            ],
            message_events=[new_event(self.job_id, **message) for message in self._pending_messages],
        )
        if rows:
            latest = rows[-1]
            report.progress = {
                "step": latest["step"],
                "total_steps": latest["total_steps"],
                "trained_tokens": latest["tokens"],
                "latest_metrics": latest,
                "estimated_finish": _estimated_finish(latest),
            }
            run_info = self.follower.layout.run
            if run_info.exists():
                report.progress["hyperparameters"] = json.loads(run_info.read_text())["hyperparameters"]
        on_disk = dict(complete_checkpoints(self.follower.layout.checkpoints))
        self._on_disk = set(on_disk)
        if self._on_disk != self._recorded_checkpoints:
            for step, folder in on_disk.items():
                if step not in (self._recorded_checkpoints or ()):
                    row = self.follower.rows_by_step.get(step)
                    report.checkpoints[step] = (self.data.relative(folder), _event_data(row) if row else None)
            report.on_disk = self._on_disk
            report.output_bytes = folder_bytes(self.follower.layout.root)
        return report


def _estimated_finish(row: dict) -> int:
    seconds_per_step = row["elapsed_seconds"] / row["step"]
    return int(time.time() + seconds_per_step * (row["total_steps"] - row["step"]))


def _event_data(row: dict) -> dict:
    return {key: value for key, value in row.items() if key in EVENT_KEYS or key.startswith(EVENT_PREFIXES)}


def _step_message(row: dict) -> str:
    message = f"Step {row['step']}/{row['total_steps']}: training loss={row['train_loss']:.4f}"
    if "valid_loss" in row:
        message += f", validation loss={row['valid_loss']:.4f}"
    return message
