"""Settings from the environment, validated when asked for (never at import), so tests can set them.

Every variable is `LMTUNE_<FIELD>` except the two that name other services (`DATABASE_URL`,
`REDIS_URL`). A bad value is refused at start with the variable's name and the allowed range.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "LMTUNE_"


def default_data_dir() -> Path:
    # one folder per user, whatever the working folder: `lmtune keys create` and `lmtune up` run
    # from different folders must see the same keys
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "lmtune"


class SettingsError(ValueError):
    """One line per bad variable: `NAME=value: what is wrong`."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", populate_by_name=True)

    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="LMTUNE_DATA_DIR: uploads, job outputs and the SQLite files; by default "
        "$XDG_DATA_HOME/lmtune (~/.local/share/lmtune), the same from any working folder",
    )
    database_url: str = Field(
        "",
        validation_alias=AliasChoices("DATABASE_URL", "database_url"),
        description="DATABASE_URL: SQLite in the data folder unless set",
    )
    redis_url: str | None = Field(
        None,
        validation_alias=AliasChoices("REDIS_URL", "redis_url"),
        description="REDIS_URL: the broker; unset means the embedded broker",
    )
    queue_prefix: str = Field(
        "", max_length=64, description="LMTUNE_QUEUE_PREFIX: isolates deployments sharing one Redis"
    )
    max_upload_bytes: int = Field(
        512 * 1024 * 1024, ge=1024, le=1 << 40, description="LMTUNE_MAX_UPLOAD_BYTES: larger uploads get 413"
    )
    max_attempts: int = Field(
        3, ge=1, le=100, description="LMTUNE_MAX_ATTEMPTS: failed runs of one job before it fails for good"
    )
    lease_seconds: float = Field(
        60, ge=1, le=86400, description="LMTUNE_LEASE_SECONDS: a worker silent this long is lost"
    )
    sweep_seconds: float = Field(
        30, gt=0, le=3600, description="LMTUNE_SWEEP_SECONDS: how often a worker looks for lost jobs"
    )
    disk_full_backoff_seconds: float = Field(
        60,
        ge=0,
        le=86400,
        description="LMTUNE_DISK_FULL_BACKOFF_SECONDS: an attempt that found the disk full waits this long before "
        "the job is queued again, doubled after each such failure",
    )
    cancel_grace_seconds: float = Field(5, ge=0, le=3600, description="LMTUNE_CANCEL_GRACE_SECONDS: SIGTERM to SIGKILL")
    pause_grace_seconds: float = Field(
        300, ge=0, le=86400, description="LMTUNE_PAUSE_GRACE_SECONDS: time to write the pause checkpoint"
    )
    visibility_timeout: int = Field(
        7 * 24 * 3600, ge=60, le=365 * 24 * 3600, description="LMTUNE_VISIBILITY_TIMEOUT: longer than the longest job"
    )
    upload_validations: int = Field(
        2,
        ge=1,
        le=64,
        description="LMTUNE_UPLOAD_VALIDATIONS: uploads validated at "
        "once (each a thread); more wait, and past 4x this many uploads get 429",
    )
    # per API key, and per API process
    quota_active_jobs: int = Field(
        4, ge=1, le=10_000, description="LMTUNE_QUOTA_ACTIVE_JOBS: a key's jobs queued or running at once"
    )
    quota_active_eval_runs: int = Field(
        16, ge=1, le=10_000, description="LMTUNE_QUOTA_ACTIVE_EVAL_RUNS: a key's eval runs queued or running at once"
    )
    quota_storage_bytes: int = Field(
        100 * 2**30, ge=1, le=1 << 50, description="LMTUNE_QUOTA_STORAGE_BYTES: a key's files and job outputs"
    )
    max_streams_per_key: int = Field(
        8, ge=1, le=10_000, description="LMTUNE_MAX_STREAMS_PER_KEY: a key's open event streams per API process"
    )
    stream_keepalive_seconds: float = Field(
        15, gt=0, le=60, description="LMTUNE_STREAM_KEEPALIVE_SECONDS: an idle event stream sends a comment this often"
    )
    max_connections: int = Field(
        1000, ge=1, le=1_000_000, description="LMTUNE_MAX_CONNECTIONS: open connections per API process; more get 503"
    )
    inference_url: str = Field(
        "http://127.0.0.1:8001",
        description="LMTUNE_INFERENCE_URL: the model server (lmtune serve-models) the API sends completions to",
    )
    inference_secret: str | None = Field(
        None,
        min_length=16,
        max_length=512,
        description="LMTUNE_INFERENCE_SECRET: the secret the API shows the model server, which answers no one "
        "else (`lmtune up` makes one at every start)",
    )
    serve_max_models: int = Field(
        2, ge=1, le=64, description="LMTUNE_SERVE_MAX_MODELS: models (bases and adapters) the model server keeps loaded"
    )
    serve_max_memory_mb: int = Field(
        4096,
        ge=64,
        le=1 << 22,
        description="LMTUNE_SERVE_MAX_MEMORY_MB: memory the model server's loaded weights may take",
    )
    serve_concurrency: int = Field(
        4, ge=1, le=64, description="LMTUNE_SERVE_CONCURRENCY: answers generated at once, taking turns token by token"
    )
    serve_queue: int = Field(
        8, ge=0, le=1024, description="LMTUNE_SERVE_QUEUE: requests that may wait beyond those; more get 429"
    )
    python_grader_sandbox: Literal["strict", "weak", "off"] = Field(
        "strict",
        description="LMTUNE_PYTHON_GRADER_SANDBOX: strict runs python graders only with every isolation layer "
        "(docs/evals.md), weak with what the kernel offers, off refuses them",
    )
    python_grader_seconds: float = Field(
        30, gt=0, le=600, description="LMTUNE_PYTHON_GRADER_SECONDS: wall time of one grade(sample, item) call"
    )
    python_grader_memory_mb: int = Field(
        2048, ge=64, le=1 << 20, description="LMTUNE_PYTHON_GRADER_MEMORY_MB: a python grader's address space"
    )
    redeliver_seconds: float = Field(
        30,
        gt=0,
        le=3600,
        description="LMTUNE_REDELIVER_SECONDS: how often a worker sends "
        "again the messages of queued jobs that a broker lost",
    )

    webhook_allow_private: bool = Field(
        False,
        description="LMTUNE_WEBHOOK_ALLOW_PRIVATE: webhooks may go to loopback and private addresses "
        "(`lmtune up` sets it; a shared server should not)",
    )
    webhook_timeout_seconds: float = Field(
        10, ge=1, le=60, description="LMTUNE_WEBHOOK_TIMEOUT_SECONDS: a receiver's whole answer to one try"
    )
    webhook_first_retry_seconds: float = Field(
        5, ge=0.1, le=30, description="LMTUNE_WEBHOOK_FIRST_RETRY_SECONDS: the wait before the first retry; it doubles"
    )
    webhook_retry_hours: float = Field(
        72, ge=0.01, le=720, description="LMTUNE_WEBHOOK_RETRY_HOURS: how long after its event a delivery is retried"
    )
    webhook_concurrency: int = Field(
        4, ge=1, le=64, description="LMTUNE_WEBHOOK_CONCURRENCY: tries under way at once to one endpoint, per deliverer"
    )
    metrics_token: str | None = Field(
        None,
        min_length=16,
        max_length=512,
        description="LMTUNE_METRICS_TOKEN: the bearer token GET /metrics asks for; unset: /metrics is off",
    )

    @field_validator("metrics_token", "inference_secret", mode="before")
    @classmethod
    def _empty_is_unset(cls, value):
        return value or None

    @model_validator(mode="after")
    def _resolve_paths(self) -> Settings:
        self.data_dir = self.data_dir.resolve()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'lmtune.db'}"
        self.redis_url = self.redis_url or None
        return self

    @property
    def embedded_broker_url(self) -> str:
        return f"sqla+sqlite:///{self.data_dir / 'broker.sqlite'}"

    @property
    def broker_url(self) -> str:
        return self.redis_url or self.embedded_broker_url


def env_name(field: str) -> str:
    return {"database_url": "DATABASE_URL", "redis_url": "REDIS_URL"}.get(field, ENV_PREFIX + field.upper())


def load_settings(**overrides) -> Settings:
    """The settings from the environment (and `overrides`), or SettingsError naming each bad variable."""
    try:
        return Settings(**overrides)
    except ValidationError as error:
        raise SettingsError("\n".join(_describe(problem) for problem in error.errors())) from None


def _describe(problem: dict) -> str:
    field = str(problem["loc"][0]) if problem["loc"] else ""
    name = env_name(field) if field in Settings.model_fields else field
    value = str(problem.get("input", ""))[:80]
    bounds = _bounds(field)
    return f"{name}={value}: {problem['msg'].lower()}" + (f" (allowed: {bounds})" if bounds else "")


def _bounds(field: str) -> str:
    info = Settings.model_fields.get(field)
    if info is None:
        return ""
    low = high = None
    for rule in info.metadata:
        low = getattr(rule, "ge", None) if getattr(rule, "ge", None) is not None else low
        low = f"more than {rule.gt}" if getattr(rule, "gt", None) is not None else low
        high = getattr(rule, "le", None) if getattr(rule, "le", None) is not None else high
    kind = "a whole number" if info.annotation is int else "a number"
    if low is None and high is None:
        return ""
    lower = low if isinstance(low, str) else f"from {low}"
    return f"{kind} {lower} to {high}"
