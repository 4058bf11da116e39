"""Settings from the environment, read when asked for (never at import), so tests can set them."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, Field


class Settings(BaseModel):
    data_dir: Path = Field(description="LMTUNE_DATA_DIR: uploads, job outputs and the SQLite files")
    database_url: str = Field(description="DATABASE_URL: SQLite in the data folder unless set")
    redis_url: str | None = Field(description="REDIS_URL: the broker; unset means the embedded broker")
    queue_prefix: str = Field(description="LMTUNE_QUEUE_PREFIX: isolates deployments sharing one Redis")
    max_upload_bytes: int = Field(description="LMTUNE_MAX_UPLOAD_BYTES: larger uploads get 413")
    max_attempts: int = Field(description="LMTUNE_MAX_ATTEMPTS: failed runs of one job before it fails for good")
    lease_seconds: float = Field(description="LMTUNE_LEASE_SECONDS: a worker silent this long is lost")
    sweep_seconds: float = Field(description="LMTUNE_SWEEP_SECONDS: how often a worker looks for lost jobs")
    cancel_grace_seconds: float = Field(description="LMTUNE_CANCEL_GRACE_SECONDS: SIGTERM to SIGKILL")
    pause_grace_seconds: float = Field(description="LMTUNE_PAUSE_GRACE_SECONDS: time to write the pause checkpoint")
    visibility_timeout: int = Field(description="LMTUNE_VISIBILITY_TIMEOUT: longer than the longest job")

    @property
    def embedded_broker_url(self) -> str:
        return f"sqla+sqlite:///{self.data_dir / 'broker.sqlite'}"

    @property
    def broker_url(self) -> str:
        return self.redis_url or self.embedded_broker_url


def load_settings() -> Settings:
    env = os.environ
    data_dir = Path(env.get("LMTUNE_DATA_DIR", "lmtune-data")).resolve()
    return Settings(
        data_dir=data_dir,
        database_url=env.get("DATABASE_URL") or f"sqlite:///{data_dir / 'lmtune.db'}",
        redis_url=env.get("REDIS_URL") or None,
        queue_prefix=env.get("LMTUNE_QUEUE_PREFIX", ""),
        max_upload_bytes=int(env.get("LMTUNE_MAX_UPLOAD_BYTES", 512 * 1024 * 1024)),
        max_attempts=int(env.get("LMTUNE_MAX_ATTEMPTS", 3)),
        lease_seconds=float(env.get("LMTUNE_LEASE_SECONDS", 60)),
        sweep_seconds=float(env.get("LMTUNE_SWEEP_SECONDS", 30)),
        cancel_grace_seconds=float(env.get("LMTUNE_CANCEL_GRACE_SECONDS", 5)),
        pause_grace_seconds=float(env.get("LMTUNE_PAUSE_GRACE_SECONDS", 300)),
        visibility_timeout=int(env.get("LMTUNE_VISIBILITY_TIMEOUT", 7 * 24 * 3600)),
    )
