"""The API's memory and responsiveness while it takes large uploads, and an oversize chunked one.

    python benchmarks/upload_memory.py [--megabytes 64 256]

Starts `lmtune serve` (SQLite, a fresh data folder, its own temp folder) and, for each size,
uploads a generated valid JSONL file of that many MiB. Reports the server's resident memory before
the upload and at its peak during it (psutil, sampled every 5 ms), the upload's time, and the
latency of `GET /v1/files` polled during it (other requests must stay fast while an upload is
validated). Then sends a chunked upload with no Content-Length past the size limit and reports how
much the server took before its 413 and whether it left any file in the data or temp folders.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from cli.sample_data import chat_examples
from workers.ports import free_port

MIB = 1024 * 1024
BOUNDARY = "benchmark-boundary"


@dataclass
class LiveServer:
    url: str
    key: str
    pid: int
    data_dir: Path
    temp_dir: Path
    limit: int

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.key}"}

    def files_left(self) -> list[Path]:
        return [
            p
            for folder in (self.data_dir / "files", self.temp_dir)
            if folder.exists()
            for p in folder.rglob("*")
            if p.is_file()
        ]


@contextmanager
def live_server(root: Path, limit: int):
    """`lmtune serve` on a free port, with an API key; killed on exit."""
    data_dir, temp_dir = root / "data", root / "tmp"
    temp_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "LMTUNE_DATA_DIR": str(data_dir),
        "LMTUNE_MAX_UPLOAD_BYTES": str(limit),
        "TMPDIR": str(temp_dir),
    }
    env.pop("DATABASE_URL", None)
    command = [sys.executable, "-m", "cli"]
    key = subprocess.run(
        [*command, "keys", "create", "bench"], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    port = free_port()
    log = (root / "server.log").open("wb")
    server = subprocess.Popen([*command, "serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            if server.poll() is not None:
                raise RuntimeError(f"the server exited at start:\n{(root / 'server.log').read_text()[-3000:]}")
            time.sleep(0.1)
        yield LiveServer(f"http://127.0.0.1:{port}", key, server.pid, data_dir, temp_dir, limit)
    finally:
        server.kill()
        server.wait()
        log.close()


def write_dataset(path: Path, size: int) -> Path:
    """A valid chat JSONL file of about `size` bytes: generated examples, repeated."""
    lines = [json.dumps(row).encode() + b"\n" for row in chat_examples(500, seed=0, spread=0.6)]
    written = 0
    with path.open("wb") as out:
        while written < size:
            for line in lines:
                out.write(line)
                written += len(line)
    return path


class Sampler(threading.Thread):
    """Calls `probe` every `interval` seconds until stopped; keeps what it returns."""

    def __init__(self, probe, interval: float):
        super().__init__(daemon=True)
        self.probe, self.interval, self.values, self.stopped = probe, interval, [], threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.values.append(self.probe())
            time.sleep(self.interval)

    def stop(self) -> list:
        self.stopped.set()
        self.join()
        return self.values


def measure_upload(server: LiveServer, path: Path) -> dict:
    """Upload `path`; the server's RSS before and at peak, the time, and GET latencies meanwhile."""
    process = psutil.Process(server.pid)
    baseline = process.memory_info().rss
    rss = Sampler(lambda: process.memory_info().rss, 0.005)
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=600) as other:

        def timed_get() -> float:
            start = time.perf_counter()
            other.get("/v1/files").raise_for_status()
            return time.perf_counter() - start

        latency = Sampler(timed_get, 0.05)
        rss.start()
        latency.start()
        start = time.perf_counter()
        with path.open("rb") as handle:
            response = httpx.post(
                f"{server.url}/v1/files",
                headers=server.headers,
                timeout=600,
                files={"file": (path.name, handle)},
                data={"purpose": "fine-tune"},
            )
        seconds = time.perf_counter() - start
        latencies, samples = latency.stop(), rss.stop()
    response.raise_for_status()
    return {
        "megabytes": path.stat().st_size / MIB,
        "examples": response.json()["examples"],
        "seconds": seconds,
        "baseline_mb": baseline / MIB,
        "peak_mb": max(samples) / MIB,
        "growth_mb": (max(samples) - baseline) / MIB,
        "get_median_ms": 1000 * statistics.median(latencies),
        "get_max_ms": 1000 * max(latencies),
        "gets": len(latencies),
    }


def oversize_chunked(server: LiveServer, factor: int = 2) -> dict:
    """Send a chunked multipart upload (no Content-Length) of `factor` x the limit, stopping when the
    server answers; how much was sent, the answer, and the files it left behind."""
    host, port = server.url.removeprefix("http://").split(":")
    head = (
        f"POST /v1/files HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {server.key}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    form = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n\r\n'
    ).encode()
    before = set(server.files_left())
    piece = b'{"text": "' + b"x" * (64 * 1024 - 13) + b'"}\n'
    sent, answer = 0, b""
    with socket.create_connection((host, int(port))) as connection:
        connection.sendall(head + b"%x\r\n%s\r\n" % (len(form), form))
        try:
            while sent < factor * server.limit:
                if select.select([connection], [], [], 0)[0]:
                    break  # the server has answered
                connection.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                sent += len(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass
        connection.settimeout(30)
        try:
            while chunk := connection.recv(65536):
                answer += chunk
                if b"\r\n\r\n" in answer and answer.rstrip().endswith(b"}"):
                    break
        except (ConnectionResetError, TimeoutError):
            pass
    left = set(server.files_left()) - before
    return {
        "sent_mb": sent / MIB,
        "status": answer.split(b" ", 2)[1].decode() if answer else "none",
        "body": answer.partition(b"\r\n\r\n")[2].decode(errors="replace"),
        "files_left": len(left),
        "largest_left": max((p.stat().st_size for p in left), default=0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, nargs="+", default=[64, 256])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        limit = (max(args.megabytes) + 16) * MIB
        with live_server(root, limit) as server:
            print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, upload limit {limit // MIB} MiB\n")
            print(
                "| upload MiB | examples | seconds | API RSS before MiB | peak MiB | growth MiB | GET /v1/files median ms | max ms |"
            )
            print("|---|---|---|---|---|---|---|---|")
            for megabytes in args.megabytes:
                path = write_dataset(root / f"train-{megabytes}.jsonl", megabytes * MIB)
                r = measure_upload(server, path)
                path.unlink()
                print(
                    f"| {r['megabytes']:.0f} | {r['examples']:,} | {r['seconds']:.1f} | {r['baseline_mb']:.0f} | {r['peak_mb']:.0f} "
                    f"| {r['growth_mb']:.0f} | {r['get_median_ms']:.0f} | {r['get_max_ms']:.0f} |"
                )
            r = oversize_chunked(server)
            print(
                f"\nchunked upload with no Content-Length: sent {r['sent_mb']:.0f} MiB before the answer {r['status']} "
                f"(limit {limit // MIB} MiB); files it left in the data and temp folders: {r['files_left']}"
            )


if __name__ == "__main__":
    main()
