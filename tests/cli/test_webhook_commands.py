"""`lmtune webhooks ...` and `lmtune jobs create --dry-run`, against the real app in process."""

import json

import openai
import pytest

from tests.cli.test_client import server  # noqa: F401  (the CLI bound to the app)
from tests.service.conftest import GOOD_FILE, make_api  # noqa: F401
from tests.webhook_receiver import Receiver


@pytest.fixture
def api(make_api):  # noqa: F811
    return make_api(webhook_allow_private=True)


def test_create_prints_the_secret_once_then_list_test_and_delete(server, api):  # noqa: F811
    receiver = Receiver(answer=lambda n: 202)
    try:
        made = server.lmtune("webhooks", "create", receiver.url, "--events", "fine_tuning.job.failed")
        assert made.exit_code == 0, made.output
        secret = made.output.strip().splitlines()[-1]
        assert secret.startswith("whsec_") and "shown only now" in made.output
        [endpoint] = json.loads(server.lmtune("webhooks", "list", "--json").output)
        assert endpoint["event_types"] == ["fine_tuning.job.failed"] and "signing_secret" not in endpoint
        assert secret not in server.lmtune("webhooks", "list").output

        tested = server.lmtune("webhooks", "test", endpoint["id"], "--event", "fine_tuning.job.failed")
        assert tested.exit_code == 0 and "answered 202" in tested.output, tested.output
        event = openai.OpenAI(api_key="x").webhooks.unwrap(
            receiver.received[0].body, receiver.received[0].headers, secret=secret
        )
        assert event.type == "fine_tuning.job.failed"

        assert server.lmtune("webhooks", "deliveries", endpoint["id"]).exit_code == 0
        assert "deleted webhook endpoint" in server.lmtune("webhooks", "delete", endpoint["id"]).output
        gone = server.lmtune("webhooks", "delete", endpoint["id"])
        assert gone.exit_code == 1 and "no webhook endpoint with id" in gone.output
    finally:
        receiver.close()


def test_a_refused_url_is_one_line(server, make_api):  # noqa: F811
    refused = server.lmtune("webhooks", "create", "ftp://example.com/x")
    assert refused.exit_code == 1 and "http:// or https://" in refused.output and "Traceback" not in refused.output


def test_dry_run_shows_the_estimate_and_creates_nothing(server, api, tmp_path):  # noqa: F811
    (tmp_path / "train.jsonl").write_bytes(GOOD_FILE)
    shown = server.lmtune(
        "jobs",
        "create",
        "--model",
        "lmtune-tiny",
        "--training-file",
        str(tmp_path / "train.jsonl"),
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--dry-run",
    )
    assert shown.exit_code == 0, shown.output
    assert "steps" in shown.output and "6" in shown.output and "tokens" in shown.output
    assert "warning: no worker is taking jobs" in shown.output
    assert api.queue.sent == []
    as_json = server.lmtune(
        "jobs",
        "create",
        "--model",
        "lmtune-tiny",
        "--training-file",
        str(tmp_path / "train.jsonl"),
        "--dry-run",
        "--json",
    )
    assert json.loads(as_json.output[as_json.output.index("{") :])["object"] == "fine_tuning.job.estimate"
