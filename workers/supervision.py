"""Supervising a trainer subprocess: start it, record its progress, pass on cancel, pause and the
worker's shutdown as signals, and make sure it is gone when the attempt ends."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass

from lmtune.fence import ATTEMPT_ENV
from lmtune.settings import Settings
from lmtune.store.jobs import Control
from workers.lease_keeper import LeaseKeeper
from workers.processes import die_with_parent
from workers.progress_reporter import ProgressReporter
from workers.training.launcher import COLLECTIVE_TIMEOUT_ENV

POLL_SECONDS = 0.5
NO_CONTROL = Control(cancel=False, pause=False)


@dataclass(frozen=True)
class Ending:
    """How the trainer ended: its exit status, and why it was stopped, if it was."""

    code: int
    stop_reason: str | None  # "cancel", "pause", "shutdown" or None


def supervise(
    settings: Settings,
    command: list[str],
    log_path,
    attempt: int,
    reporter: ProgressReporter | None,
    lease: LeaseKeeper,
    shutting_down,
    gang_env: dict | None = None,
) -> Ending:
    """Run the trainer to its end. Raises StaleAttempt (after killing it) once another attempt holds
    the job; the trainer's own fence stops it before that at its next write. A member node of a gang
    (workers.gang) has no reporter: rank 0 records the progress and reads cancel and pause."""
    env = {
        **os.environ,
        ATTEMPT_ENV: str(attempt),
        COLLECTIVE_TIMEOUT_ENV: str(settings.collective_timeout_seconds),
        **(gang_env or {}),
    }
    with open(log_path, "ab") as trainer_log:
        trainer = subprocess.Popen(
            command, stdout=trainer_log, stderr=subprocess.STDOUT, env=env, preexec_fn=die_with_parent
        )
    try:
        stop_reason, signalled_at = None, 0.0
        while trainer.poll() is None:
            lease.check()
            control = reporter.poll() if reporter else NO_CONTROL
            wanted = (
                "cancel"
                if control.cancel
                else "pause"
                if control.pause
                else "shutdown"
                if shutting_down.is_set()
                else None
            )
            if wanted and stop_reason != wanted:
                # SIGTERM: the trainer finishes its step, writes a checkpoint and exits
                stop_reason, signalled_at = wanted, time.monotonic()
                trainer.send_signal(signal.SIGTERM)
            if stop_reason:  # a pause or a shutdown waits for the checkpoint; a cancel does not wait long
                grace = settings.cancel_grace_seconds if stop_reason == "cancel" else settings.pause_grace_seconds
                if time.monotonic() - signalled_at > grace:
                    trainer.kill()
            _wait(trainer, POLL_SECONDS)
        if reporter:
            reporter.flush(between=lease.check)
        return Ending(trainer.returncode, stop_reason)
    finally:
        if trainer.poll() is None:  # superseded, or a fault in this worker
            trainer.kill()
            trainer.wait()


def _wait(process: subprocess.Popen, seconds: float) -> None:
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        pass
