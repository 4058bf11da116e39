"""`lmtune evals ...` and `lmtune graders run` against the real app in process; eval runs are taken by
the real eval runner, called where the follow loop waits."""

import json

import pytest
from click.testing import CliRunner

from cli import client_commands as client_cli
from cli import eval_commands
from cli.client import LmtuneClient
from cli.main import main
from tests.service.conftest import api, make_api  # noqa: F401  (the app fixtures)
from tests.service.test_evals_api import EXACT, FUZZY, ITEM_SCHEMA, ROWS, work

pytestmark = pytest.mark.filterwarnings("ignore:The Evals API is deprecated:DeprecationWarning")


@pytest.fixture
def lmtune(api, monkeypatch):  # noqa: F811
    from fastapi.testclient import TestClient

    key = api.alice["Authorization"].split()[1]
    monkeypatch.setattr(
        client_cli,
        "make_client",
        lambda base_url, api_key: LmtuneClient("http://testserver/v1", api_key, TestClient(api.client.app)),
    )
    # the follow loop's pause is where a worker would run the queued runs
    monkeypatch.setattr(eval_commands.time, "sleep", lambda seconds: work(api))

    def run(*args):
        return CliRunner().invoke(main, list(args), env={"LMTUNE_API_KEY": key})

    return run


def test_evals_create_list_run_and_get(lmtune, tmp_path):
    criteria = tmp_path / "criteria.json"
    criteria.write_text(json.dumps([EXACT, FUZZY]))
    created = lmtune(
        "evals",
        "create",
        "--name",
        "caps",
        "--item-schema",
        json.dumps(ITEM_SCHEMA),
        "--criteria",
        str(criteria),
        "--json",
    )
    assert created.exit_code == 0, created.output
    eval_id = json.loads(created.stdout)["id"]
    listed = lmtune("evals", "list")
    assert eval_id in listed.output and "exact, fuzzy" in listed.output
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    ran = lmtune("evals", "run", eval_id, "--data", str(data), "--jsonl")
    assert ran.exit_code == 0, ran.output
    assert (
        "completed" in ran.output and "1/3" in ran.output and "fuzzy 0.722" in ran.output
    )  # (1 + 1 + WRatio(lisbon, madrid) 1/6) / 3
    shown = lmtune("evals", "get", eval_id)
    assert "caps" in shown.output and "completed" in shown.output


def test_evals_run_samples_a_model_and_refuses_a_bad_choice_of_options(lmtune, tmp_path):
    eval_id = json.loads(
        lmtune(
            "evals",
            "create",
            "--name",
            "m",
            "--item-schema",
            json.dumps(ITEM_SCHEMA),
            "--criteria",
            json.dumps([EXACT]),
            "--json",
        ).output
    )["id"]
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps({"item": row["item"]}) + "\n" for row in ROWS))
    ran = lmtune(
        "evals",
        "run",
        eval_id,
        "--data",
        str(data),
        "--model",
        "lmtune-tiny",
        "--prompt",
        "{{item.question}}",
        "--max-tokens",
        "4",
        "--json",
    )
    assert ran.exit_code == 0, ran.output
    (run,) = json.loads(ran.stdout)
    assert run["status"] == "completed" and run["result_counts"]["total"] == 3
    both = lmtune("evals", "run", eval_id, "--data", str(data), "--model", "lmtune-tiny", "--jsonl")
    assert both.exit_code == 2 and "give one of --model, --job or --jsonl" in both.output
    missing = lmtune("evals", "run", eval_id, "--data", "nothing.jsonl", "--jsonl")
    assert missing.exit_code == 1 and "no such local file" in missing.output


def test_graders_run_prints_the_reward_and_the_errors(lmtune):
    grader = {**FUZZY, "input": "{{sample.output_text}}"}
    ran = lmtune("graders", "run", json.dumps(grader), "--sample", "Paris", "--item", json.dumps({"answer": "paris"}))
    assert ran.exit_code == 0 and "reward 1.0000" in ran.output
    broken = lmtune("graders", "run", json.dumps({**EXACT, "reference": "{{item.nope}}"}), "--sample", "x")
    assert "reward 0.0000" in broken.output and "invalid_variable_error: True" in broken.output
