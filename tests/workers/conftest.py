"""The API in process with settings for worker turns: leases renewed four times a second (so a
cancel or a takeover is seen at once), no back-off after a full disk, gangs on the loopback address."""

from contextlib import ExitStack

import pytest

from tests.service.conftest import running_api
from tests.workers.worker_turns import with_builtin_model

WORKER_SETTINGS = {
    "lease_seconds": 1,
    "disk_full_backoff_seconds": 0,
    "node_address": "127.0.0.1",
}


@pytest.fixture
def make_worker_api(tmp_path, tiny_model):
    """An API with WORKER_SETTINGS and the keyword arguments given, its built-in model made."""

    def start(**overrides):
        api = running.enter_context(running_api(tmp_path, **{**WORKER_SETTINGS, **overrides}))
        with_builtin_model(api, tiny_model)
        return api

    with ExitStack() as running:
        yield start


@pytest.fixture
def worker_api(make_worker_api):
    return make_worker_api()
