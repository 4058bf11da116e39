"""A deployment for integration tests: real Redis, real PostgreSQL, real `lmtune worker` and
`lmtune serve` processes."""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cli.local_key import read_local_key
from cli.sample_data import chat_examples, write_jsonl
from lmtune.dispatch import CeleryJobQueue
from lmtune.services import submit_job
from lmtune.settings import Settings, load_settings
from lmtune.spec import parse_spec
from lmtune.store.database import Database, open_database
from lmtune.store.jobs import get_job
from lmtune.store.models import Job
from lmtune.uploads import store_upload
from tests.waiting import wait_for_exit, wait_while_progressing, working
from workers.ports import free_port

OWNER = "key-test"


@dataclass
class Deployment:
    env: dict
    settings: Settings
    db: Database
    root: Path
    processes: list[subprocess.Popen] = field(default_factory=list)

    def _start(self, name: str, *args: str) -> subprocess.Popen:
        log = (self.root / f"{name}-{len(self.processes)}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "cli", *args], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        self.processes.append(process)
        return process

    def start_worker(self, gpus: int = 0) -> subprocess.Popen:
        """A worker of the queue of jobs with `gpus` GPUs; without CUDA, its trainer runs that many gloo processes."""
        return self._start("worker", "worker", "--gpus", str(gpus))

    def start_deliverer(self) -> subprocess.Popen:
        return self._start("deliverer", "deliver-webhooks")

    def start_model_server(self, **settings: str) -> str:
        """`lmtune serve-models` on a free port, with a secret, which servers started after it use; its base URL."""
        port = free_port()
        self.env.update(
            settings, LMTUNE_INFERENCE_URL=f"http://127.0.0.1:{port}", LMTUNE_INFERENCE_SECRET=secrets.token_hex(16)
        )
        wait_until_listening(port, self._start("models", "serve-models"))
        return self.env["LMTUNE_INFERENCE_URL"]

    def start_server(self) -> str:
        """`lmtune serve` on a free port; its base URL once it answers."""
        port = free_port()
        process = self._start("server", "serve", "--port", str(port))
        wait_until_listening(port, process)
        return f"http://127.0.0.1:{port}"

    def create_key(self, name: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "cli", "keys", "create", name],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip()

    def upload(self, rows: list[dict], owner: str = OWNER) -> str:
        path = write_jsonl(rows, self.root / f"upload-{secrets.token_hex(4)}.jsonl")
        with path.open("rb") as stream:
            return store_upload(self.settings, self.db, owner, path.name, "fine-tune", stream).id

    def submit(
        self,
        *,
        examples: int = 40,
        epochs: int = 4,
        batch_size: int = 4,
        owner: str = OWNER,
        nodes: int = 1,
        gpus: int = 0,
        **training,
    ) -> Job:
        spec = parse_spec(
            {
                "model": "lmtune-tiny",
                "training_file": self.upload(chat_examples(examples, seed=11, spread=0.5), owner),
                "hyperparameters": {"n_epochs": epochs, "batch_size": batch_size},
                "training": {"learning_rate": 2e-3, "checkpoint_every_steps": 5, "sample_prompts": [], **training},
            }
        )
        return submit_job(self.settings, self.db, CeleryJobQueue(self.settings), owner, spec, nodes=nodes, gpus=gpus)

    def job(self, job_id: str) -> Job:
        return get_job(self.db, job_id)

    def wait_for(self, job_id: str, condition, what: str = "the condition") -> Job:
        """Until `condition(job)`, as long as the job moves (status, attempt or step changing)."""
        pids = [process.pid for process in self.processes]
        return wait_while_progressing(
            lambda: self.job(job_id),
            condition,
            what=f"{job_id}: {what}",
            diagnose=self.logs,
            progress=lambda job: (job_progress(job), working(*pids)),
        )

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted(self.root.glob("*.log")))


def job_progress(job) -> tuple:
    """What changes while a job (a row or an SDK object) is alive and moving."""
    progress = getattr(job, "model_extra", None) or {}
    step = getattr(job, "step", None) if not progress else (progress.get("progress") or {}).get("step")
    return job.status, getattr(job, "attempt", None) or progress.get("attempt"), step


def finished_job(client, job_id: str, deployment: Deployment):
    """The job through the openai SDK once it has succeeded or failed, waiting while it moves."""
    pids = [process.pid for process in deployment.processes]
    return wait_while_progressing(
        lambda: client.fine_tuning.jobs.retrieve(job_id),
        lambda job: job.status in ("succeeded", "failed"),
        progress=lambda job: (job_progress(job), working(*pids)),
        what="the fine-tune's end",
        diagnose=deployment.logs,
    )


@contextmanager
def open_deployment(tmp_path: Path, database_url: str, redis_url: str = "redis://127.0.0.1:6379/0", **settings: str):
    """`settings`: environment variables for every process, over the defaults below."""
    data = tmp_path / "data"
    env = dict(os.environ)
    env.update(
        LMTUNE_DATA_DIR=str(data),
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        LMTUNE_QUEUE_PREFIX=f"test-{secrets.token_hex(4)}-",  # isolates this test's queues in the shared Redis
        LMTUNE_LEASE_SECONDS="4",
        LMTUNE_SWEEP_SECONDS="1",
        LMTUNE_REDELIVER_SECONDS="2",
        LMTUNE_CANCEL_GRACE_SECONDS="3",
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )
    env.update(settings)
    saved = dict(os.environ)
    os.environ.update(env)
    settings = load_settings()
    deployment = Deployment(env, settings, open_database(settings.database_url), tmp_path)
    try:
        yield deployment
    finally:
        os.environ.clear()
        os.environ.update(saved)
        for process in deployment.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait()
        deployment.db.engine.dispose()
        forget_queues(settings.redis_url, settings.queue_prefix)


def forget_queues(redis_url: str, prefix: str) -> None:
    """Remove what this test's queues left in the shared Redis: the queues, kombu's bindings, and
    unacknowledged messages (kept by kombu in one hash for every queue) routed to them."""
    import json

    import redis

    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=f"*{prefix}*"):
        client.delete(key)
    for tag, entry in client.hscan_iter("unacked"):
        _message, _exchange, routing_key = json.loads(entry)
        if routing_key.startswith(prefix):
            client.hdel("unacked", tag)
            client.zrem("unacked_index", tag)
    client.close()


@dataclass
class LocalService:
    url: str
    key: str  # the one `lmtune up` made and saved on its first start
    process: subprocess.Popen
    log: Path
    env: dict  # the environment it runs in, for commands run beside it

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def printed_url(self) -> str:
        """The dashboard URL, with the key in its fragment, as `lmtune up` prints it for its user."""
        return re.search(r"^lmtune: (http://\S+#key=\S+)$", self.log.read_text(errors="replace"), re.MULTILINE)[1]


@contextmanager
def local_service(root: Path, **environment: str):
    """`lmtune up` as a user on one machine runs it: a fresh data folder, SQLite and the embedded
    broker (no Redis, no PostgreSQL), one worker and the model server."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in (
            "REDIS_URL",
            "DATABASE_URL",
            "LMTUNE_API_KEY",
            "LMTUNE_BASE_URL",
            "LMTUNE_INFERENCE_URL",
            "LMTUNE_INFERENCE_SECRET",
        )
    }
    env.update(LMTUNE_DATA_DIR=str(root / "data"), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", **environment)
    port, log = free_port(), root / "up.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli", "up", "--port", str(port), "--gpus", "0"],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until_listening(port, process)
        yield LocalService(f"http://127.0.0.1:{port}", read_local_key(root / "data"), process, log, env)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        wait_for_exit(process, "`lmtune up` to stop")


def wait_until_listening(port: int, process: subprocess.Popen) -> None:
    """Until the port answers; fails at once if the process exits (a server that starts never hangs)."""

    def listening() -> bool:
        assert process.poll() is None, "the server exited at start"
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", port)) == 0

    # a starting process shows no progress to watch: its CPU time is the sign that it still works
    wait_while_progressing(listening, bool, progress=lambda _: working(process.pid), what=f"a server on port {port}")
