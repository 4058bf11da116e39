"""The API under load, downloads, dispatch latency and a job's wall time, from one run.

Starts the service itself (`lmtune up`: the API and one worker, SQLite and the embedded broker, in
a temporary data folder; with `--postgres`, a second deployment on PostgreSQL for the API table and
the cost of one read; with `--redis`, another on Redis for the dispatch latency) and reports, side by
side:

- requests/s and p50/p95/p99 latency of job retrieve, job list, events list and /v1/models, at a
  fixed offered rate (open loop) and at saturation (closed loop), idle and while a job trains,
  with the API process's CPU time per request;
- single-file and whole-archive download speed of a 500 MB file in the page cache, beside the raw
  read speed of that file, and the API's peak memory;
- dispatch latency (POST to `running`), and a job's wall time through the API against
  `lmtune train` on the same spec.

The load generator is a small asyncio HTTP/1.1 keep-alive client (uvloop when installed), so
that the client costs little of the machine's CPU. Every request goes to 127.0.0.1.

    python -m benchmarks.service_load [--seconds 5] [--rate 100] [--connections 8] [--repeats 3]
        [--postgres postgresql://postgres@127.0.0.1:5432/test] [--redis redis://127.0.0.1:6379/0]
    python -m benchmarks.service_load --against ../main-worktree [--postgres URL] [--seconds 3]

With `--against CHECKOUT` it only compares the API's CPU a request of that checkout and this one, the
two deployments taking turns (`compared`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from benchmarks.process_memory import peak_rss_mb
from cli.restarting_child import WORKER_NICENESS  # the worker's priority under `lmtune up`, for a fair `lmtune train`
from cli.sample_data import chat_examples, write_jsonl
from workers.ports import free_port

TICKS = os.sysconf("SC_CLK_TCK")
BIG_FILE_MB = 500


@dataclass
class Load:
    requests: int
    seconds: float
    latencies: list[float]
    cpu_seconds: float
    errors: int

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000 if ordered else float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


class Deployment:
    """`lmtune up` in its own data folder, on a free port."""

    def __init__(self, root: Path, extra_env: dict | None = None, checkout: Path | None = None):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        # a fuller job list than the default quota of active jobs per key allows
        self.env = {
            **os.environ,
            "LMTUNE_DATA_DIR": str(root / "data"),
            "HF_HUB_OFFLINE": "1",
            "LMTUNE_QUOTA_ACTIVE_JOBS": "100",
            **(extra_env or {}),
        }
        for name in ("DATABASE_URL", "REDIS_URL"):
            if name not in (extra_env or {}):
                self.env.pop(name, None)
        # the catalogue's lmtune-tiny, made here rather than by the (low-priority) worker on first use
        from lmtune.layout import DataLayout
        from workers.models.tiny_model import make_tiny_model

        make_tiny_model(DataLayout(root / "data").builtin_model("lmtune-tiny"))
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.secret = subprocess.run(
            [sys.executable, "-m", "cli", "keys", "create", "bench"],
            env=self.env,
            cwd=checkout,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        self.log = (root / "up.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cli", "up", "--port", str(self.port), "--gpus", "0"],
            env=self.env,
            cwd=checkout,  # another checkout's code: `-m` imports from the working directory first
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.http = httpx.Client(base_url=self.base, headers={"Authorization": f"Bearer {self.secret}"}, timeout=120)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                self.http.get("/v1/models").raise_for_status()
                return
            except httpx.TransportError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"lmtune up exited; see {root / 'up.log'}") from None
                time.sleep(0.2)
        raise RuntimeError("lmtune up did not answer within 120 s")

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.process.pid)  # the API process only

    def peak_rss_mb(self) -> float:
        return peak_rss_mb(self.process.pid)

    def upload(self, rows: list[dict]) -> str:
        path = write_jsonl(rows, self.root / f"train-{len(rows)}.jsonl")
        with path.open("rb") as stream:
            return self.http.post("/v1/files", files={"file": stream}, data={"purpose": "fine-tune"}).json()["id"]

    def create_job(self, file_id: str, epochs: int, batch_size: int = 4, **training) -> dict:
        body = {
            "model": "lmtune-tiny",
            "training_file": file_id,
            "hyperparameters": {"n_epochs": epochs, "batch_size": batch_size},
            "training": {"learning_rate": 2e-3, **training},
        }
        response = self.http.post("/v1/fine_tuning/jobs", json=body)
        response.raise_for_status()
        return response.json()

    def wait(self, job_id: str, statuses: set[str], poll: float = 0.02) -> dict:
        while (job := self.http.get(f"/v1/fine_tuning/jobs/{job_id}").json())["status"] not in statuses:
            if job["status"] in {"failed", "cancelled"} - statuses:
                raise RuntimeError(f"job {job_id} {job['status']}: {job.get('error')}")
            time.sleep(poll)
        return job

    def stop(self) -> None:
        self.http.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


async def _open(port: int):
    return await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)


async def _get(connection, request: bytes) -> tuple[int, int]:
    """One request on a keep-alive connection; (status, body bytes); the body is read and dropped."""
    reader, writer = connection
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = None
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length is None:
        raise RuntimeError("response without Content-Length")
    await reader.readexactly(length)
    return status, length


def _request(path: str, secret: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {secret}\r\n\r\n".encode()


async def _saturate(port: int, request: bytes, connections: int, seconds: float) -> tuple[list[float], int, float]:
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def client():
        nonlocal errors
        connection = await _open(port)
        try:
            while time.perf_counter() < stop_at:
                start = time.perf_counter()
                status, _ = await _get(connection, request)
                latencies.append(time.perf_counter() - start)
                errors += status != 200
        finally:
            connection[1].close()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(connections)))
    return latencies, errors, time.perf_counter() - start


async def _offered(
    port: int, request: bytes, rate: float, seconds: float, connections: int
) -> tuple[list[float], int, float]:
    """Open loop: request i is due at i / rate; its latency counts from when it was due, so a
    server that falls behind shows it (no coordinated omission)."""
    free: asyncio.Queue = asyncio.Queue()
    for _ in range(connections):
        free.put_nowait(await _open(port))
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter()
    total = int(rate * seconds)

    async def one(due: float):
        nonlocal errors
        connection = await free.get()
        try:
            status, _ = await _get(connection, request)
            errors += status != 200
        finally:
            free.put_nowait(connection)
        latencies.append(time.perf_counter() - due)

    tasks = []
    for i in range(total):
        due = start + i / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        tasks.append(asyncio.create_task(one(due)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    while not free.empty():
        free.get_nowait()[1].close()
    return latencies, errors, elapsed


def measure(deployment: Deployment, path: str, *, rate: float | None, seconds: float, connections: int) -> Load:
    request = _request(path, deployment.secret)
    cpu_before = deployment.cpu_seconds()
    if rate is None:
        latencies, errors, elapsed = asyncio.run(_saturate(deployment.port, request, connections, seconds))
    else:
        latencies, errors, elapsed = asyncio.run(_offered(deployment.port, request, rate, seconds, connections))
    return Load(len(latencies), elapsed, latencies, deployment.cpu_seconds() - cpu_before, errors)


def seeded(deployment: Deployment) -> tuple[list[dict], str]:
    """A training file and 30 jobs, cancelled while queued so that the worker stays idle: (the file's
    rows, the newest job's id)."""
    rows = chat_examples(40, seed=11, spread=0.5)
    file_id = deployment.upload(rows)
    jobs = [deployment.create_job(file_id, epochs=1) for _ in range(30)]  # a fuller list
    for job in jobs:
        deployment.http.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel")
    return rows, jobs[-1]["id"]


def api_tables(deployment: Deployment, job_id: str, args, database: str) -> list[str]:
    lines = api_table(deployment, job_id, args, f"idle, {database}", args.repeats)
    with _trainer_beside(deployment):
        return lines + api_table(deployment, job_id, args, f"trainer running, {database}", args.repeats)


@contextmanager
def _scratch_database(server_url: str, suffix: str = ""):
    """A new database on the server of `server_url`, dropped after: its URL."""
    import sqlalchemy

    name = f"lmtune_bench_{os.getpid()}{suffix}"
    admin = sqlalchemy.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        yield server_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()


def compared(other: Path, args, root: Path) -> list[str]:
    """API CPU ms a request at saturation, idle, of `lmtune up` from the checkout `other` and from this
    one, on SQLite (and PostgreSQL with --postgres): the two deployments take turns, the order swapped
    each round, so that a machine whose speed drifts moves both alike. Each figure the median of the
    rounds (--repeats, at least 5)."""
    checkouts = {"other": other.resolve(), "this": Path.cwd()}
    rounds = max(args.repeats, 5)
    lines = [
        "",
        f"| endpoint | database | {other} | this checkout | runs ({other}; this) |",
        "|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    with ExitStack() as stack:
        databases = {"SQLite": lambda name: None}
        if args.postgres:
            databases["PostgreSQL"] = lambda name: {
                "DATABASE_URL": stack.enter_context(_scratch_database(args.postgres, f"_{name}"))
            }
        for database, env_of in databases.items():
            deployed = {}
            for name, checkout in checkouts.items():
                deployment = Deployment(root / f"compared-{database}-{name}", env_of(name), checkout)
                stack.callback(deployment.stop)
                deployed[name] = (deployment, seeded(deployment)[1])
            for endpoint in _endpoints(""):
                cpu: dict[str, list[float]] = {name: [] for name in checkouts}
                for turn in range(rounds):
                    for name in list(checkouts)[:: 1 if turn % 2 == 0 else -1]:
                        deployment, job_id = deployed[name]
                        path = _endpoints(job_id)[endpoint]
                        if turn == 0:
                            measure(deployment, path, rate=None, seconds=1, connections=args.connections)  # warm-up
                        load = measure(deployment, path, rate=None, seconds=args.seconds, connections=args.connections)
                        cpu[name].append(load.cpu_seconds / max(load.requests, 1) * 1000)
                runs = "; ".join(" ".join(f"{x:.2f}" for x in cpu[name]) for name in checkouts)
                lines.append(
                    f"| {endpoint} | {database} | {statistics.median(cpu['other']):.2f} | "
                    f"{statistics.median(cpu['this']):.2f} | {runs} |"
                )
                print(lines[-1], flush=True)
    return lines


def read_costs(database_url: str, reads: int = 5000) -> list[str]:
    """One read of a key and its job (what every request under a job's path makes), in this process,
    as SQLAlchemy's defaults make it (the pool's pre-ping, a transaction) and as `Database.read` does:
    wall time, this process's CPU and the database server process's (when it runs on this machine)."""
    from sqlalchemy import create_engine, text

    from lmtune.store.database import open_database
    from lmtune.store.key_reads import digest
    from lmtune.store.keys import _KEY_AND_JOB, create_key

    db = open_database(database_url)
    params = {"digest": digest(create_key(db, "reads")[1]), "job_id": "ftjob-none"}
    defaults = create_engine(database_url, pool_pre_ping=True)
    lines = ["", "| a read of a key and its job | wall ms | client CPU ms | server CPU ms |", "|---|---|---|---|"]
    for name, connect in (("SQLAlchemy's defaults", defaults.connect), ("`Database.read`", db.read)):
        with connect() as connection:
            server = connection.execute(text("SELECT pg_backend_pid()")).scalar()
        local = Path(f"/proc/{server}").exists()
        for _ in range(50):  # warm: the statement prepared on the server
            with connect() as connection:
                connection.execute(_KEY_AND_JOB, params).first()
        started, client, served = time.perf_counter(), time.process_time(), cpu_seconds(server) if local else 0.0
        for _ in range(reads):
            with connect() as connection:
                connection.execute(_KEY_AND_JOB, params).first()
        wall, client = time.perf_counter() - started, time.process_time() - client
        served = f"{(cpu_seconds(server) - served) / reads * 1e3:.3f}" if local else "not on this machine"
        lines.append(f"| {name} | {wall / reads * 1e3:.3f} | {client / reads * 1e3:.3f} | {served} |")
        print(lines[-1], flush=True)
    defaults.dispose()
    db.engine.dispose()
    return lines


def _endpoints(job_id: str) -> dict[str, str]:
    return {
        "job retrieve": f"/v1/fine_tuning/jobs/{job_id}",
        "job list": "/v1/fine_tuning/jobs?limit=20",
        "events list": f"/v1/fine_tuning/jobs/{job_id}/events?limit=20",
        "/v1/models": "/v1/models",
    }


def api_table(deployment: Deployment, job_id: str, args, state: str, repeats: int) -> list[str]:
    lines = []
    for name, path in _endpoints(job_id).items():
        measure(deployment, path, rate=None, seconds=1, connections=args.connections)  # warm-up
        for mode, rate in ((f"{args.rate:.0f}/s offered", args.rate), ("saturation", None)):
            runs = [
                measure(deployment, path, rate=rate, seconds=args.seconds, connections=args.connections)
                for _ in range(repeats)
            ]
            lines.append(
                f"| {name} | {state} | {mode} | {statistics.median(r.rate for r in runs):,.0f} | {statistics.median(r.percentile(50) for r in runs):.1f} | "
                f"{statistics.median(r.percentile(95) for r in runs):.1f} | {statistics.median(r.percentile(99) for r in runs):.1f} | "
                f"{statistics.median(r.cpu_seconds / max(r.requests, 1) * 1000 for r in runs):.2f} | {sum(r.errors for r in runs)} |"
            )
            print(lines[-1], flush=True)
    return lines


def download_speeds(deployment: Deployment, job_id: str, repeats: int) -> list[str]:
    """A final-model folder with a 500 MB file (and its manifest) put in the job's run folder, read
    three ways. The routes serve any folder with a manifest; the job need not have trained."""
    from lmtune.layout import write_manifest
    from workers.models.tiny_model import make_tiny_model

    final = make_tiny_model(deployment.root / "data" / "jobs" / job_id / "final")
    big = final / "big.bin"
    with big.open("wb") as out:
        block = os.urandom(1 << 20)
        for _ in range(BIG_FILE_MB):
            out.write(block)
    write_manifest(final)
    size = big.stat().st_size
    archive_size = sum(p.stat().st_size for p in final.rglob("*") if p.is_file())

    def raw() -> float:
        start = time.perf_counter()
        with big.open("rb", buffering=0) as handle:
            buffer = bytearray(4 << 20)
            while handle.readinto(buffer):
                pass
        return size / (time.perf_counter() - start)

    def http(path: str, expected: int) -> float:
        start = time.perf_counter()
        received = _download(deployment.port, _request(path, deployment.secret))
        if received != expected:
            raise RuntimeError(f"{path}: {received} bytes, expected {expected}")
        return received / (time.perf_counter() - start)

    base = f"/v1/fine_tuning/jobs/{job_id}/final"
    raw()  # into the page cache
    rss_before = deployment.peak_rss_mb()
    speeds = {
        "raw read (page cache)": [raw() for _ in range(repeats)],
        "single file (final/files/big.bin)": [http(f"{base}/files/big.bin", size) for _ in range(repeats)],
        "archive (final/content, tar)": [http(f"{base}/content", _tar_size(final)) for _ in range(repeats)],
    }
    if shutil.which("curl"):  # the same download by a client that is not ours
        speeds["single file, read by curl"] = [_curl(deployment, f"{base}/files/big.bin") for _ in range(repeats)]
    lines = [
        f"| {name} | {statistics.median(v) / 1e6:,.0f} | {', '.join(f'{x / 1e6:,.0f}' for x in v)} |"
        for name, v in speeds.items()
    ]
    lines.append(
        f"API peak RSS: {rss_before:,.0f} MB before the downloads, {deployment.peak_rss_mb():,.0f} MB after "
        f"({size / 1e6:,.0f} MB file, {archive_size / 1e6:,.0f} MB archive)"
    )
    for line in lines:
        print(line, flush=True)
    return lines


def _download(port: int, request: bytes) -> int:
    """The body's size (the routes send Content-Length), read into one reused 8 MiB buffer with a
    blocking socket: an asyncio stream reader copies every block and tops out near 0.6 GB/s here,
    below the server, while `recv_into` reads at about curl's speed (2.7-2.9 GB/s on this machine)."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        sock.sendall(request)
        buffer = bytearray(8 << 20)
        view = memoryview(buffer)
        received = 0
        while (head_end := buffer.find(b"\r\n\r\n", 0, received)) < 0:
            received += sock.recv_into(view[received:])
        head = bytes(buffer[:head_end]).lower()
        length = int(head.split(b"content-length:")[1].split(b"\r\n")[0])
        body = received - head_end - 4
        while body < length:
            got = sock.recv_into(view[: min(len(view), length - body)])
            if not got:
                break
            body += got
        return body


def _curl(deployment: Deployment, path: str) -> float:
    command = [
        "curl",
        "-sSf",
        "-o",
        "/dev/null",
        "-w",
        "%{speed_download}",
        "-H",
        f"Authorization: Bearer {deployment.secret}",
        f"http://127.0.0.1:{deployment.port}{path}",
    ]
    return float(subprocess.run(command, check=True, capture_output=True, text=True).stdout)


def _tar_size(folder: Path) -> int:
    manifest = json.loads((folder / "manifest.json").read_text())
    paths = [entry["path"] for entry in manifest["files"]] + ["manifest.json"]
    size = sum(512 + -(-(folder / p).stat().st_size // 512) * 512 for p in paths)
    size += 1024  # two zero blocks end the archive
    return -(-size // 10240) * 10240  # tar pads to whole records of 20 blocks


@contextmanager
def _trainer_beside(deployment: Deployment):
    """A trainer at the worker's priority training the tiny model beside the API, as a job's
    trainer under `lmtune up` does; yields once it has finished a step."""
    spec = deployment.root / "long.json"
    spec.write_text(
        json.dumps(
            {
                "model": str(deployment.root / "data" / "models" / "lmtune-tiny"),
                "training_file": str(
                    write_jsonl(chat_examples(400, seed=3, spread=0.5), deployment.root / "long.jsonl")
                ),
                "hyperparameters": {"n_epochs": 50, "batch_size": 8},
                "training": {"learning_rate": 1e-3},
            }
        )
    )
    output = deployment.root / "long-run"
    trainer = subprocess.Popen(
        [sys.executable, "-m", "cli", "train", str(spec), "--output", str(output)],
        env=deployment.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: os.nice(WORKER_NICENESS),
    )
    try:
        while not (output / "metrics.jsonl").exists() or not (output / "metrics.jsonl").stat().st_size:
            if trainer.poll() is not None:
                raise RuntimeError("the trainer beside the API exited")
            time.sleep(0.5)
        yield
    finally:
        trainer.kill()
        trainer.wait()


def dispatch_latency(deployment: Deployment, repeats: int) -> list[float]:
    """POST to `running` of one-step jobs, each sent when the worker is idle (the one before has
    succeeded). A first job, not counted, waits for the worker to start."""
    file_id = deployment.upload(chat_examples(12, seed=11, spread=0.5))
    deployment.wait(deployment.create_job(file_id, epochs=1, batch_size=12)["id"], {"succeeded"})
    latencies = []
    for _ in range(repeats):
        start = time.perf_counter()
        job = deployment.create_job(file_id, epochs=1, batch_size=12)
        deployment.wait(job["id"], {"running", "succeeded"}, poll=0.01)
        latencies.append(time.perf_counter() - start)
        deployment.wait(job["id"], {"succeeded"})
    return latencies


def wall_times(deployment: Deployment, rows: list[dict], epochs: int, repeats: int) -> tuple[list[float], list[float]]:
    """The same spec through the API (POST to `succeeded`) and through `lmtune train`."""
    file_id = deployment.upload(rows)
    local = write_jsonl(rows, deployment.root / "wall.jsonl")
    model = deployment.root / "data" / "models" / "lmtune-tiny"
    spec = deployment.root / "wall.json"
    spec.write_text(
        json.dumps(
            {
                "model": str(model),
                "training_file": str(local),
                "seed": 0,
                "hyperparameters": {"n_epochs": epochs, "batch_size": 4},
                "training": {"learning_rate": 2e-3},
            }
        )
    )
    through_api, direct = [], []
    for round_number in range(repeats):
        start = time.perf_counter()
        job = deployment.create_job(file_id, epochs=epochs)
        deployment.wait(job["id"], {"succeeded"}, poll=0.05)
        through_api.append(time.perf_counter() - start)
        start = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "cli",
                "train",
                str(spec),
                "--output",
                str(deployment.root / f"direct-{round_number}"),
            ],
            env=deployment.env,
            check=True,
            capture_output=True,
            preexec_fn=lambda: os.nice(WORKER_NICENESS),
        )
        direct.append(time.perf_counter() - start)
    return through_api, direct


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each measurement")
    parser.add_argument("--rate", type=float, default=100.0, help="offered requests per second (open loop)")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="each figure is the median of this many runs")
    parser.add_argument("--wall-epochs", type=int, default=1)
    parser.add_argument("--wall-repeats", type=int, default=1)
    parser.add_argument(
        "--postgres", default=None, metavar="URL", help="also measure the API on a database made on this server"
    )
    parser.add_argument("--redis", default=None, metavar="URL", help="also measure dispatch latency on this Redis")
    parser.add_argument("--skip", nargs="*", default=[], choices=["api", "downloads", "dispatch", "wall"])
    parser.add_argument(
        "--against",
        type=Path,
        default=None,
        metavar="CHECKOUT",
        help="only compare the API's CPU a request with that of another checkout (e.g. a git worktree of main)",
    )
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    root = Path(tempfile.mkdtemp(prefix="lmtune-load-"))
    if args.against:
        compared(args.against, args, root)
        shutil.rmtree(root, ignore_errors=True)
        return
    report: list[str] = [
        f"machine: {platform.machine()}, {os.cpu_count()} cores shared with other work; one API process; "
        f"each figure the median of {args.repeats} runs of {args.seconds:.0f} s; {args.connections} connections"
    ]
    print(report[0], flush=True)
    deployment = Deployment(root / "sqlite")
    try:
        rows, target = seeded(deployment)
        if "api" not in args.skip:
            header = [
                "| endpoint | state | load | req/s | p50 ms | p95 ms | p99 ms | API CPU ms/req | errors |",
                "|---|---|---|---|---|---|---|---|---|",
            ]
            print("\n".join(header), flush=True)
            report += ["", *header, *api_tables(deployment, target, args, "SQLite")]
        if "downloads" not in args.skip:
            header = ["", "| download | median MB/s | runs |", "|---|---|---|"]
            print("\n".join(header), flush=True)
            report += header + download_speeds(deployment, target, args.repeats)
        if "dispatch" not in args.skip:
            latencies = dispatch_latency(deployment, args.repeats)
            report.append(
                f"\ndispatch latency (POST to running), embedded broker: median {statistics.median(latencies):.2f} s "
                f"({', '.join(f'{x:.2f}' for x in latencies)})"
            )
            print(report[-1], flush=True)
        if "wall" not in args.skip:
            through_api, direct = wall_times(deployment, rows[:12], epochs=args.wall_epochs, repeats=args.wall_repeats)
            api, plain = statistics.median(through_api), statistics.median(direct)
            report.append(
                f"job wall time, 12 examples x {args.wall_epochs} epochs (batch 4) on lmtune-tiny, median of {args.wall_repeats}: through the API {api:.1f} s, lmtune train "
                f"{plain:.1f} s; overhead {api - plain:+.1f} s ({(api / plain - 1) * 100:+.0f}%)"
            )
            print(report[-1], flush=True)
    finally:
        deployment.stop()
    if args.postgres and "api" not in args.skip:
        with _scratch_database(args.postgres) as url:
            on_postgres = Deployment(root / "postgres", {"DATABASE_URL": url})
            try:
                report += api_tables(on_postgres, seeded(on_postgres)[1], args, "PostgreSQL")
            finally:
                on_postgres.stop()
            report += read_costs(url)
    if args.redis and "dispatch" not in args.skip:
        prefix = f"bench-{os.getpid()}-"
        redis = Deployment(root / "redis", {"REDIS_URL": args.redis, "LMTUNE_QUEUE_PREFIX": prefix})
        try:
            latencies = dispatch_latency(redis, args.repeats)
            report.append(
                f"dispatch latency (POST to running), Redis: median {statistics.median(latencies):.2f} s "
                f"({', '.join(f'{x:.2f}' for x in latencies)})"
            )
            print(report[-1], flush=True)
        finally:
            redis.stop()
            _delete_redis_keys(args.redis, prefix)
    shutil.rmtree(root, ignore_errors=True)
    print("\n" + "\n".join(report))


def _delete_redis_keys(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    for key in client.scan_iter(f"*{prefix}*"):
        client.delete(key)


if __name__ == "__main__":
    main()
