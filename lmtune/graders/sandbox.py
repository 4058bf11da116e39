"""Running python graders: a batch of (sample, item) pairs through `grade(sample, item)` in a
sandboxed child process (sandbox_child.py says what it closes; docs/evals.md lists it by kernel).

The parent holds the wall clock: each call gets `seconds`; a child that overruns it, or dies (CPU
limit, memory), is killed with its whole process group, that pair is reported as the error, and a new
child takes the remaining pairs. A child starts in an empty folder with an environment of three
variables. Whatever the grader does, what comes back is bounded: one line per pair, cut at 64 kB.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

CHILD = Path(__file__).with_name("sandbox_child.py")
MAX_LINE = 64 * 1024
START_SECONDS = 30.0  # an interpreter starting (and importing json) on a loaded machine
MODES = ("strict", "weak", "off")


class SandboxUnavailable(RuntimeError):
    """Python graders cannot run here: the isolation could not be set up (strict) or they are off."""


@dataclass(frozen=True)
class SandboxLimits:
    seconds: float = 30.0  # wall time of one grade() call
    memory_mb: int = 2048  # address space (OpenAI gives a grader 2 GB)
    processes: int = 16  # RLIMIT_NPROC: threads of the sandbox's user (new processes are denied outright)
    open_files: int = 64
    file_bytes: int = 1 << 20
    mode: str = "strict"  # strict: every layer or nothing; weak: what the kernel offers; off: refused
    hidden: tuple[str, ...] = ()  # folders the grader must not see (the data folder): refused if readable


@dataclass
class PythonResult:
    """One pair's outcome: a score, or the grader's own error (`runtime_error`, with its traceback's
    last lines), or the sandbox's (`server_error`: timeout, killed, crashed)."""

    score: float | None = None
    runtime_error: str | None = None
    server_error: str | None = None
    details: str | None = None
    seconds: float = 0.0


@dataclass
class _Child:
    process: subprocess.Popen
    folder: str
    buffer: bytes = b""
    selector: selectors.BaseSelector = field(default_factory=selectors.DefaultSelector)


def readable_paths() -> list[str]:
    """What a grader may read: this Python's installation (its standard library and site-packages, so
    numpy, rapidfuzz, nltk... import) and the system's shared libraries."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    paths |= {sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")}
    paths |= {"/usr/lib", "/usr/lib64", "/lib", "/lib64", "/usr/local/lib", "/etc/ld.so.cache", "/dev/urandom"}
    return sorted(paths)


def check_hidden(limits: SandboxLimits) -> None:
    """The data folder must not lie under anything the grader may read."""
    for hidden in limits.hidden:
        for path in readable_paths():
            if Path(hidden).resolve().is_relative_to(Path(path).resolve()) and Path(path).is_dir():
                raise SandboxUnavailable(
                    f"python graders are refused: the data folder is inside {path}, which graders can read; "
                    "move LMTUNE_DATA_DIR out of the Python installation and the system library folders"
                )


def run_python(source: str, pairs: list[tuple[dict, dict]], limits: SandboxLimits) -> list[PythonResult]:
    """`grade(sample, item)` for every pair, in order. SandboxUnavailable if python graders cannot run."""
    if limits.mode == "off":
        raise SandboxUnavailable("python graders are turned off on this server (LMTUNE_PYTHON_GRADER_SANDBOX=off)")
    check_hidden(limits)
    results: list[PythonResult | None] = [None] * len(pairs)
    while left := [i for i, r in enumerate(results) if r is None]:
        _run_child(source, [(i, pairs[i]) for i in left], limits, results)
    return results  # type: ignore[return-value]


def _run_child(source: str, pairs: list, limits: SandboxLimits, results: list) -> None:
    """One child for `pairs` until it ends; fills `results` for the pairs it answered, and the pair it
    was busy with when it overran or died."""
    request = {
        "source": source,
        "pairs": pairs,
        "strict": limits.mode == "strict",
        "readable": readable_paths(),
        "limits": {
            "memory_bytes": limits.memory_mb << 20,
            "cpu_seconds": int(limits.seconds * len(pairs) + START_SECONDS),
            "processes": limits.processes,
            "file_bytes": limits.file_bytes,
            "open_files": limits.open_files,
        },
    }
    child = _start(request)
    try:
        first = _read_line(child, START_SECONDS)
        if first is None or "ready" not in first:
            if first and "refused" in first:
                raise SandboxUnavailable(
                    f"python graders are refused: the sandbox cannot be set up here ({first['refused']}); "
                    "an operator may allow a weaker sandbox with LMTUNE_PYTHON_GRADER_SANDBOX=weak"
                )
            _fail_all(results, pairs, "sandbox_start", f"the sandbox did not start: {_exit_reason(child)}")
            return
        setup = _read_line(child, limits.seconds)
        for position, (index, _) in enumerate(pairs):
            started = time.monotonic()
            line = setup if position == 0 else _read_line(child, limits.seconds)
            if line is not None and "setup_error" in line:
                _fail_all(results, pairs[position:], None, line["setup_error"], runtime=True)
                return
            if line is None:
                reason = _exit_reason(child)
                kind = "timeout" if child.process.poll() is None or reason.startswith("timed out") else "crashed"
                message = f"grade() took more than {limits.seconds:g} s" if kind == "timeout" else reason
                results[index] = PythonResult(server_error=kind, details=message, seconds=time.monotonic() - started)
                return  # the rest go to a new child
            results[index] = PythonResult(
                score=line.get("score"), runtime_error=line.get("error"), seconds=time.monotonic() - started
            )
    finally:
        _stop(child)


def _start(request: dict) -> _Child:
    folder = tempfile.mkdtemp(prefix="lmtune-grader-")
    os.chmod(folder, 0o711)  # the grader runs as nobody when the service is root: it may enter, not list
    environment = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": folder, "OPENBLAS_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-I", "-c", CHILD.read_text()],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=folder,
        env=environment,
        start_new_session=True,  # its own process group, killed whole
        close_fds=True,
    )
    child = _Child(process, folder)
    child.selector.register(process.stdout, selectors.EVENT_READ)
    try:
        process.stdin.write(json.dumps(request).encode())
        process.stdin.close()
    except BrokenPipeError:
        pass
    return child


def _read_line(child: _Child, seconds: float) -> dict | None:
    """The child's next result line within `seconds`; None if it overran, ended or wrote garbage."""
    deadline = time.monotonic() + seconds
    while b"\n" not in child.buffer:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or len(child.buffer) > MAX_LINE or not child.selector.select(remaining):
            return None
        chunk = os.read(child.process.stdout.fileno(), 65536)
        if not chunk:
            return None
        child.buffer += chunk
    line, child.buffer = child.buffer.split(b"\n", 1)
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _exit_reason(child: _Child) -> str:
    code = child.process.poll()
    if code is None:
        return "timed out"
    if code < 0:
        name = signal.Signals(-code).name
        why = {"SIGXCPU": "CPU time limit", "SIGKILL": "killed", "SIGSYS": "forbidden system call"}.get(name, name)
        return f"the grader's process ended by {name} ({why})"
    error = child.process.stderr.read(4000).decode(errors="replace").strip().splitlines()
    return f"the grader's process exited with status {code}" + (f": {error[-1]}" if error else "")


def _fail_all(results, pairs, kind, message, runtime: bool = False) -> None:
    for index, _ in pairs:
        results[index] = (
            PythonResult(runtime_error=message) if runtime else PythonResult(server_error=kind, details=message)
        )


def _stop(child: _Child) -> None:
    try:
        os.killpg(child.process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    child.process.wait()
    child.selector.close()
    for stream in (child.process.stdout, child.process.stderr):
        stream.close()
    shutil.rmtree(child.folder, ignore_errors=True)


def sandbox_limits(settings) -> SandboxLimits:
    """The limits a process's settings (lmtune.settings.Settings) give python graders."""
    return SandboxLimits(
        seconds=settings.python_grader_seconds,
        memory_mb=settings.python_grader_memory_mb,
        mode=settings.python_grader_sandbox,
        hidden=(str(settings.data_dir),),
    )
