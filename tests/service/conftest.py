from __future__ import annotations

import json
import secrets
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from cli.sample_data import chat_examples
from lmtune.settings import Settings
from lmtune.store.keys import create_key
from service.app import create_app
from service.deps import get_queue
from tests.helpers import MemoryQueue, migrated_sqlite


@dataclass
class Api:
    client: TestClient
    settings: Settings
    queue: MemoryQueue
    alice: dict
    bob: dict

    def upload(self, headers: dict, content: bytes, filename: str = "train.jsonl"):
        return self.client.post(
            "/v1/files", headers=headers, files={"file": (filename, content)}, data={"purpose": "fine-tune"}
        )


def jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


GOOD_FILE = jsonl(chat_examples(12, seed=3))


def asgi_request(api, method: str, path: str, headers: list[tuple[bytes, bytes]] = ()) -> dict:
    """The ASGI scope of one HTTP request by alice, for tests that drive the app message by message
    (a client hanging up, something happening between the headers and the body)."""
    authorization = (b"authorization", api.alice["Authorization"].encode())
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), authorization, *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }


@contextmanager
def running_api(tmp_path, **overrides):
    """An API on its own data folder with keys for alice and bob and an in-memory queue; keyword
    arguments override settings."""
    data = tmp_path / f"data-{secrets.token_hex(3)}"
    if "database_url" not in overrides:
        overrides["database_url"] = migrated_sqlite(data / "lmtune.db")
    settings = Settings(
        **{
            "data_dir": data,
            "redis_url": None,
            "queue_prefix": "api-test-",
            "max_upload_bytes": 64 * 1024,
            "max_attempts": 3,
            "lease_seconds": 60,
            "sweep_seconds": 30,
            "cancel_grace_seconds": 5,
            "pause_grace_seconds": 60,
            "visibility_timeout": 3600,
            **overrides,
        }
    )
    app = create_app(settings)
    queue = MemoryQueue()
    app.dependency_overrides[get_queue] = lambda: queue
    keys = [create_key(app.state.db, name)[1] for name in ("alice", "bob")]
    with TestClient(app) as client:
        yield Api(client, settings, queue, *({"Authorization": f"Bearer {key}"} for key in keys))
    app.state.db.engine.dispose()


@pytest.fixture
def make_api(tmp_path):
    """`running_api` as a fixture that can start several, each with its own settings."""
    with ExitStack() as running:
        yield lambda **overrides: running.enter_context(running_api(tmp_path, **overrides))


@pytest.fixture
def api(make_api):
    return make_api()
