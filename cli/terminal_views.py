"""What the terminal client shows: tables of API objects, and the live view of a job."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rich import box
from rich.console import Group
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

Column = tuple[str, Callable[[dict], Any]]

STATUS_STYLES = {"succeeded": "green", "failed": "red", "cancelled": "yellow", "running": "cyan", "paused": "magenta"}


def when(timestamp: int | None) -> str:
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S") if timestamp else ""


def loss(value: float | None) -> str:
    return f"{value:.4f}" if value is not None else ""


def duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def progress(job: dict) -> str:
    step, total = job["progress"]["step"], job["progress"]["total_steps"]
    return f"{step}/{total}" if total else ("" if job["status"] == "queued" else str(step))


def status(job: dict) -> Text:
    shown = job["status"]
    if shown == "queued" and job.get("queue_position"):
        shown = f"queued (#{job['queue_position']})"
    return Text(shown, style=STATUS_STYLES.get(job["status"], ""))


def metric(name: str) -> Callable[[dict], str]:
    return lambda job: loss((job.get("metrics") or {}).get(name))


FILE_COLUMNS: list[Column] = [
    ("ID", lambda f: f["id"]),
    ("FILENAME", lambda f: f["filename"]),
    ("BYTES", lambda f: f"{f['bytes']:,}"),
    ("EXAMPLES", lambda f: f.get("examples", "")),
    ("CREATED", lambda f: when(f["created_at"])),
]
JOB_COLUMNS: list[Column] = [
    ("ID", lambda j: j["id"]),
    ("STATUS", status),
    ("MODEL", lambda j: j["model"]),
    ("STEP", progress),
    ("LOSS", metric("train_loss")),
    ("CREATED", lambda j: when(j["created_at"])),
    ("FINE-TUNED MODEL", lambda j: j["fine_tuned_model"] or ""),
]
CHECKPOINT_COLUMNS: list[Column] = [
    ("ID", lambda c: c["id"]),
    ("STEP", lambda c: c["step_number"]),
    ("LOSS", lambda c: loss(c["metrics"].get("train_loss"))),
    ("VALID LOSS", lambda c: loss(c["metrics"].get("valid_loss"))),
    ("CREATED", lambda c: when(c["created_at"])),
]
MODEL_COLUMNS: list[Column] = [
    ("ID", lambda m: m["id"]),
    ("OWNED BY", lambda m: m["owned_by"]),
    ("HERE", lambda m: "ready" if m.get("ready", True) else "not yet"),  # a catalogue model not downloaded yet
    ("CREATED", lambda m: when(m["created"])),
]
KEY_COLUMNS: list[Column] = [
    ("ID", lambda k: k["id"]),
    ("NAME", lambda k: k["name"]),
    ("CREATED", lambda k: when(k["created_at"])),
]


def table(rows: list[dict], columns: list[Column]) -> Table:
    grid = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for header, _ in columns:
        grid.add_column(header, no_wrap=True)
    for row in rows:
        grid.add_row(*(cell if isinstance(cell, Text) else str(cell) for cell in (value(row) for _, value in columns)))
    return grid


def estimate_details(estimate: dict) -> Group:
    """What a job would take (`jobs create --dry-run`), a field a line, then the warnings."""
    tokens, memory, examples = estimate["tokens"], estimate["memory"], estimate["examples"]
    seconds = estimate["estimated_seconds"]
    gib = lambda value: f"{value / 2**30:.1f} GiB" if value is not None else "unknown"  # noqa: E731
    fits = {True: "fits", False: "does NOT fit", None: "unknown"}[memory["fits"]]
    hyper = ", ".join(f"{key}={value}" for key, value in estimate["hyperparameters"].items())
    fields = [
        ("model", estimate["model"]),
        ("queue", estimate["queue"]),
        ("examples", f"{examples['training']:,} ({examples['truncated']:,} cut, {examples['dropped']:,} skipped)"),
        ("hyperparameters", hyper),
        ("steps", f"{estimate['total_steps']:,}"),
        (
            "tokens",
            f"{tokens['trained']:,} trained, {tokens['per_epoch']:,} an epoch (counted with: {tokens['counted_with']})",
        ),
        ("time", f"{duration(seconds) if seconds is not None else 'unknown'} ({estimate['estimated_seconds_basis']})"),
        (
            "memory",
            f"about {gib(memory['estimated_bytes'])} per {memory['per']}; workers have {gib(memory['available_bytes'])}: {fits}",
        ),
    ]
    grid = Table.grid(padding=(0, 2))
    for name, value in fields:
        grid.add_row(Text(name, style="bold"), Text(str(value)))
    warnings = [Text(f"warning: {warning}", style="yellow") for warning in estimate["warnings"]]
    return Group(grid, *warnings)


def job_details(job: dict) -> Table:
    """One job, a field a line."""
    metrics = job.get("metrics") or {}
    hyper = ", ".join(f"{key}={value}" for key, value in job["hyperparameters"].items())
    error = job.get("error")
    fields = [
        ("id", job["id"]),
        ("status", status(job)),
        ("model", job["model"]),
        ("fine-tuned model", job["fine_tuned_model"]),
        ("training file", job["training_file"]),
        ("validation file", job["validation_file"]),
        ("method", (job.get("method") or {}).get("type", "supervised")),
        ("hyperparameters", hyper),
        ("step", progress(job)),
        ("train loss", loss(metrics.get("train_loss"))),
        ("valid loss", loss(metrics.get("valid_loss"))),
        ("created", when(job["created_at"])),
        ("estimated finish", when(job.get("estimated_finish"))),
        ("finished", when(job["finished_at"])),
        ("attempt", job.get("attempt") or None),
        ("error", f"{error['code']}: {error['message']}" if error else None),
    ]
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for name, value in fields:
        if value not in (None, ""):
            grid.add_row(name, value if isinstance(value, Text) else str(value))
    return grid


def event_line(event: dict) -> Text:
    style = {"warn": "yellow", "error": "red"}.get(event["level"], "")
    clock = datetime.fromtimestamp(event["created_at"]).strftime("%H:%M:%S")
    return Text.assemble((clock, "dim"), "  ", (event["message"], style))


@dataclass
class FollowView:
    """A job as the event stream and the job object reveal it; rendered by rich's Live."""

    job: dict
    recent: deque = field(default_factory=lambda: deque(maxlen=6))
    step: int = 0
    total_steps: int | None = None
    latest: dict = field(default_factory=dict)  # each metric's newest value (validation ones are sparser)

    def __post_init__(self) -> None:
        self.update_job(self.job)

    def update_job(self, job: dict) -> None:
        self.job = job
        metrics = job.get("metrics") or {}
        if metrics.get("step", job["progress"]["step"]) >= self.step:  # not older than the events seen
            self.latest.update(metrics)
        self.step = max(self.step, job["progress"]["step"])
        self.total_steps = job["progress"]["total_steps"] or self.total_steps

    def add_event(self, event: dict) -> None:
        data = event.get("data") or {}
        if event["type"] == "metrics":
            self.step = data.get("step", self.step)
            self.total_steps = data.get("total_steps") or self.total_steps
            self.latest.update(data)
        else:  # step lines would crowd out the rest: the bar shows them
            self.recent.append(event)

    def numbers(self) -> list[str]:
        """The latest losses and, for reinforcement fine-tuning, the reward's mean and spread, the KL to
        the starting model and the validation reward (docs/rft.md)."""
        m = self.latest
        shown = []
        for key, label in (("train_loss", "loss"), ("valid_loss", "valid")):
            if m.get(key) is not None:
                shown.append(f"{label} {loss(m[key])}")
        if m.get("train_reward_mean") is not None:
            spread = f" ± {m['train_reward_std']:.3f}" if m.get("train_reward_std") is not None else ""
            shown.append(f"reward {m['train_reward_mean']:.3f}{spread}")
        if m.get("train_kl") is not None:
            shown.append(f"KL {m['train_kl']:.3g}")
        if m.get("valid_reward_mean") is not None:
            shown.append(f"valid reward {m['valid_reward_mean']:.3f}")
        return shown

    def eta(self, now: float | None = None) -> str:
        finish = self.job.get("estimated_finish")
        if self.job["status"] != "running" or not finish:
            return ""
        return duration(finish - (now or time.time()))

    def __rich__(self) -> Group:
        head = Text.assemble((self.job["id"], "bold"), "  ", status(self.job), "  ", self.job["model"])
        total = self.total_steps or 0
        numbers = [f"step {self.step}/{total or '?'}", *self.numbers()]
        if eta := self.eta():
            numbers.append(f"ETA {eta}")
        bar = Table.grid(padding=(0, 2))
        bar.add_row(ProgressBar(total=total or None, completed=self.step, width=40), Text("  ".join(numbers)))
        return Group(head, bar, *(event_line(event) for event in self.recent))
