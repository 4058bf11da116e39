"""Worker turns in the fast tier: the API in process (tests.service.conftest.running_api: SQLite, the
in-memory JobQueue), a WorkerContext on the same store and queue, and trainer stand-in processes
(stand_in_trainer.py) in place of the real trainer. What the tests read back is what a user reads:
the job, its events, checkpoints and files through the API."""

from __future__ import annotations

import json
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from lmtune.layout import DataLayout
from lmtune.store.jobs import queue_name
from tests.service.conftest import GOOD_FILE, Api
from tests.waiting import wait_while_progressing
from workers.job_runner import WorkerContext, run_next_job

STAND_IN = Path(__file__).with_name("stand_in_trainer.py")
# runs that end by themselves: four steps, a checkpoint at 2 and at 4
SUCCEED = {"steps": 4, "checkpoints": [2, 4], "end": "succeed"}


@dataclass
class Worker:
    """A worker of the API's queue whose trainer is the stand-in, doing what `plan` says."""

    api: Api
    context: WorkerContext
    plan: dict

    @property
    def queue(self) -> str:
        return queue_name(0, self.api.settings.queue_prefix)

    def turn(self) -> None:
        """What a doorbell of the queue does: run the next job, if any, to the end of its attempt."""
        run_next_job(self.context, self.queue)

    def turn_in_background(self) -> threading.Thread:
        thread = threading.Thread(target=self.turn, daemon=True, name=f"turn-{self.context.worker_id}")
        thread.start()
        return thread


def make_worker(api: Api, plan: dict | None = None, name: str = "worker-a", db=None) -> Worker:
    worker = Worker(api, None, dict(plan or SUCCEED))

    def stand_in(spec_path, output, processes=1, model_name=None) -> list[str]:
        return [sys.executable, str(STAND_IN), json.dumps(worker.plan), str(spec_path), "--output", str(output)]

    db = db or api.client.app.state.db
    worker.context = WorkerContext(api.settings, db, name, 0, api.queue, trainer_command=stand_in)
    return worker


def with_builtin_model(api: Api, model: Path) -> None:
    """The catalogue's built-in model as made on first use (workers.model_sources): here, the tests' tiny model."""
    folder = DataLayout(api.settings.data_dir).builtin_model("lmtune-tiny")
    folder.parent.mkdir(parents=True, exist_ok=True)
    folder.symlink_to(model, target_is_directory=True)


def submit(api: Api, **body) -> str:
    """A job of alice's on the built-in model and a good training file; its id."""
    file_id = api.upload(api.alice, GOOD_FILE).json()["id"]
    created = api.client.post(
        "/v1/fine_tuning/jobs", headers=api.alice, json={"model": "lmtune-tiny", "training_file": file_id, **body}
    )
    assert created.status_code == 200, created.text
    return created.json()["id"]


def job(api: Api, job_id: str) -> dict:
    return api.client.get(f"/v1/fine_tuning/jobs/{job_id}", headers=api.alice).json()


def events(api: Api, job_id: str) -> list[dict]:
    """The job's events, oldest first."""
    page = api.client.get(f"/v1/fine_tuning/jobs/{job_id}/events?limit=1000", headers=api.alice).json()
    return list(reversed(page["data"]))


def messages(api: Api, job_id: str) -> list[str]:
    return [event["message"] for event in events(api, job_id) if event["type"] == "message"]


def metric_steps(api: Api, job_id: str) -> list[int]:
    return [event["data"]["step"] for event in events(api, job_id) if event["type"] == "metrics"]


def checkpoint_steps(api: Api, job_id: str) -> list[int]:
    page = api.client.get(f"/v1/fine_tuning/jobs/{job_id}/checkpoints", headers=api.alice).json()
    return sorted(checkpoint["step_number"] for checkpoint in page["data"])


def wait_for_job(api: Api, job_id: str, done, what: str) -> dict:
    """The job once `done(job)`; waits as long as its status or step moves."""
    return wait_while_progressing(
        lambda: job(api, job_id),
        done,
        progress=lambda found: (found["status"], found["progress"]["step"]),
        what=what,
        interval=0.05,
    )


def run_one_job(api: Api, plan: dict) -> str:
    """A new job run by one worker turn whose stand-in does what `plan` says; its id."""
    job_id = submit(api)
    make_worker(api, plan).turn()
    return job_id


def running_job(api: Api, plan: dict, step: int = 2) -> tuple[str, Worker, threading.Thread]:
    """A job whose stand-in trainer has reached `step`, recorded: (job id, its worker, the worker's turn)."""
    job_id = submit(api)
    worker = make_worker(api, plan)
    turn = worker.turn_in_background()
    wait_for_job(api, job_id, lambda found: found["progress"]["step"] == step, f"step {step} recorded")
    return job_id, worker, turn


def ended(thread: threading.Thread) -> None:
    """The worker's turn is over (it ends once the attempt is recorded)."""
    wait_while_progressing(lambda: thread.is_alive(), lambda alive: not alive, what="the worker's turn to end")
