from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
from fastapi.testclient import TestClient

from lmtune.sample_data import chat_examples
from lmtune.settings import Settings
from lmtune.store.keys import create_key
from service.app import create_app
from service.deps import get_queue


@dataclass
class MemoryQueue:
    """The JobQueue seam in memory: route tests see what the API sent, with no broker."""

    sent: list[str] = field(default_factory=list)

    def send(self, job) -> None:
        self.sent.append(job.id)


@dataclass
class Api:
    client: TestClient
    settings: Settings
    queue: MemoryQueue
    alice: dict
    bob: dict

    def upload(self, headers: dict, content: bytes, filename: str = "train.jsonl"):
        return self.client.post("/v1/files", headers=headers, files={"file": (filename, content)}, data={"purpose": "fine-tune"})


def jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


GOOD_FILE = jsonl(chat_examples(12, seed=3))


@contextmanager
def running_api(tmp_path, max_upload_bytes: int = 64 * 1024):
    settings = Settings(
        data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'data' / 'lmtune.db'}", redis_url=None,
        queue_prefix="api-test-", max_upload_bytes=max_upload_bytes, max_attempts=3, lease_seconds=60, sweep_seconds=30,
        cancel_grace_seconds=5, pause_grace_seconds=60, visibility_timeout=3600,
    )  # fmt: skip
    app = create_app(settings)
    queue = MemoryQueue()
    app.dependency_overrides[get_queue] = lambda: queue
    keys = [create_key(app.state.db, name)[1] for name in ("alice", "bob")]
    with TestClient(app) as client:
        yield Api(client, settings, queue, *({"Authorization": f"Bearer {key}"} for key in keys))
    app.state.db.engine.dispose()


@pytest.fixture
def api(tmp_path):
    with running_api(tmp_path) as running:
        yield running
