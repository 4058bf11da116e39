"""Two `lmtune worker` processes, their trainers, a private Redis and PostgreSQL, and the API in
process: what the fault tests break, and the checks every job must pass afterwards."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from fastapi.testclient import TestClient

from lmtune.layout import MANIFEST, RunLayout, file_sha256
from lmtune.store import history
from lmtune.store.models import TERMINAL, Job
from tests.deployment import Deployment
from tests.faults.servers import PostgresServer, RedisServer
from tests.waiting import wait_while_progressing, working

TERMINAL_EVENTS = ("The job has successfully completed", "Fine-tuning job cancelled", "Fine-tuning job failed")


@dataclass
class Cluster:
    deployment: Deployment
    redis: RedisServer
    postgres: PostgresServer
    owner: str  # the API key id the jobs belong to
    api: TestClient
    auth: dict
    workers: list[subprocess.Popen] = field(default_factory=list)

    @property
    def settings(self):
        return self.deployment.settings

    def ensure_workers(self, count: int = 2) -> list[subprocess.Popen]:
        """`count` live workers, started anew where one was killed."""
        self.workers = [worker for worker in self.workers if worker.poll() is None]
        while len(self.workers) < count:
            self.workers.append(self.deployment.start_worker())
        return self.workers

    def submit(self, **kwargs) -> Job:
        return self.deployment.submit(owner=self.owner, **kwargs)

    def job(self, job_id: str) -> Job:
        return self.deployment.job(job_id)

    def run(self, job_id: str) -> RunLayout:
        return RunLayout(self.settings.data_dir / "jobs" / job_id)

    def working(self) -> int:
        """Moves while the workers or their trainers compute."""
        return working(*(worker.pid for worker in self.workers))

    def wait(self, job_id: str, done, what: str, interval: float = 0.2) -> Job:
        """Until `done(job)`; fails only when neither the job (status, attempt, step) nor its processes move."""
        return wait_while_progressing(
            lambda: self.job(job_id),
            done,
            progress=lambda j: (j.status, j.attempt, j.step, self.working()),
            what=f"job {job_id}: {what}",
            interval=interval,
            diagnose=self.logs,
        )

    def holder(self, job: Job) -> subprocess.Popen:
        """The worker process that runs the job's current attempt."""
        pid = int(job.lease_owner.rsplit(":", 1)[1])
        return next(worker for worker in self.workers if worker.pid == pid)

    def trainer_pid(self, job_id: str) -> int | None:
        """The live trainer process writing this job's run folder, if one is."""
        output = str(self.run(job_id).root)
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                command = (entry / "cmdline").read_bytes().split(b"\0")
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if b"workers.training" in command and output.encode() in command and state != "Z":
                return int(entry.name)
        return None

    def wait_for_trainer(self, job_id: str, attempt: int) -> int:
        found = wait_while_progressing(
            lambda: (self.job(job_id), self.trainer_pid(job_id)),
            lambda pair: pair[0].attempt == attempt and pair[1],
            progress=lambda pair: (pair[0].status, pair[0].attempt, self.working()),
            what=f"a trainer for attempt {attempt}",
            diagnose=self.logs,
        )
        return found[1]

    def events(self, job_id: str) -> list:
        return history.events_after_seq(self.deployment.db, job_id, 0)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.deployment.root.glob("*.log")))

    def check(self, job_id: str, status: str) -> Job:
        """What a user of this job sees is whole and single: one terminal state, each step once in the
        metrics API, the events and the results CSV, every listed checkpoint as its manifest says, and
        for a succeeded job a final model that loads."""
        job = self.job(job_id)
        assert job.status == status and job.status in TERMINAL, (job.status, job.error_message)
        messages = [event.message for event in self.events(job_id)]
        assert len([m for m in messages if m.startswith(TERMINAL_EVENTS)]) == 1, messages

        answer = self.api.get(f"/v1/fine_tuning/jobs/{job_id}/metrics", headers=self.auth)
        steps = [row["step"] for row in answer.json()["data"]]
        last = job.total_steps if status == "succeeded" else len(steps)
        assert steps == list(range(1, last + 1))
        assert sorted(event.step for event in self.events(job_id) if event.type == "metrics") == steps

        checkpoints, _ = history.list_checkpoints(self.deployment.db, job_id, limit=100)
        assert checkpoints or status != "succeeded"
        for checkpoint in checkpoints:
            assert_matches_manifest(self.settings.data_dir / checkpoint.path)
        if status == "succeeded":
            content = self.api.get(f"/v1/files/{job.result_file_id}/content", headers=self.auth).text
            assert [int(row["step"]) for row in csv.DictReader(io.StringIO(content))] == steps
            final = self.run(job_id).final
            assert_matches_manifest(final)
            from transformers import AutoModelForCausalLM

            assert AutoModelForCausalLM.from_pretrained(final).num_parameters() > 0
        return job


def assert_matches_manifest(folder: Path) -> None:
    listed = json.loads((folder / MANIFEST).read_text())["files"]
    on_disk = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    assert sorted(entry["path"] for entry in listed) == on_disk
    for entry in listed:
        assert file_sha256(folder / entry["path"]) == entry["sha256"], entry["path"]


def alive(pid: int) -> bool:
    """Running, and not a zombie waiting for its stopped parent to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def kill(pid: int, sig: int = signal.SIGKILL) -> None:
    os.kill(pid, sig)
