"""Private Redis and PostgreSQL servers that a test can stop and start again, on free ports."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from workers.ports import free_port


def postgres_tool(name: str) -> str:
    """initdb and pg_ctl are off the PATH in Debian's packages: /usr/lib/postgresql/<version>/bin."""
    found = shutil.which(name) or next(
        iter(sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True)), None
    )
    if found is None:
        raise RuntimeError(f"{name} not found: install PostgreSQL's server package")
    return str(found)


def _wait_listening(port: int, what: str, timeout: float = 60, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"{what} does not listen on port {port}")


class RedisServer:
    """Keeps nothing on disk (as the CI Redis): a restart empties every queue. `host`: the address it
    listens on (a test's network namespaces reach it on their bridge's)."""

    def __init__(self, host: str = "127.0.0.1"):
        self.host = host
        self.port = free_port(host)
        self.url = f"redis://{host}:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", self.host, "--save", "", "--appendonly", "no"]
            # reached from the test's own hosts (network namespaces) on a private subnet
            + ([] if self.host == "127.0.0.1" else ["--protected-mode", "no"]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_listening(self.port, "redis-server", host=self.host)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()  # a crash: whatever it held is gone
            self.process.wait()


class PostgresServer:
    """initdb/pg_ctl in a temporary folder; run as the `postgres` user when the tests run as root
    (PostgreSQL refuses to run as root). `host`: the address it listens on."""

    def __init__(self, host: str = "127.0.0.1"):
        self.host = host
        self.port = free_port(host)
        self.folder = Path(tempfile.mkdtemp(prefix="lmtune-pg-"))
        self.data = self.folder / "data"
        self.url = f"postgresql://postgres@{host}:{self.port}/postgres"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            user = pwd.getpwnam("postgres")
            os.chown(self.folder, user.pw_uid, user.pw_gid)

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if self._as_postgres else []
        subprocess.run([*prefix, *command], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def initialise(self) -> None:
        self._run(postgres_tool("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        if self.host != "127.0.0.1":  # initdb trusts the loopback only; here the hosts on this subnet too
            with (self.data / "pg_hba.conf").open("a") as rules:
                rules.write("host all all samenet trust\n")

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses={self.host} -c fsync=off -c full_page_writes=off"
        )
        self._run(
            postgres_tool("pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.folder / "log"), "-w", "start"
        )
        _wait_listening(self.port, "postgres", host=self.host)

    def stop(self) -> None:
        """Immediate: every connection is cut at once, as when the server crashes or restarts."""
        self._run(postgres_tool("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def remove(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass  # already stopped
        shutil.rmtree(self.folder, ignore_errors=True)
