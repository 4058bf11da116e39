"""The `lmtune` command as a user runs it: in this process (fast), and once in a subprocess."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from cli.main import main
from lmtune.training_data import validate_jsonl_file


def lmtune(*args, cwd):
    """In a subprocess, through the module entry point."""
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=cwd, capture_output=True, text=True)


def lmtune_here(*args, cwd, monkeypatch):
    monkeypatch.chdir(cwd)
    return CliRunner().invoke(main, list(args))


@pytest.fixture
def workspace(tmp_path, tiny_model, monkeypatch):
    assert (
        lmtune_here(
            "make-sample-data", "train.jsonl", "--examples", "24", cwd=tmp_path, monkeypatch=monkeypatch
        ).exit_code
        == 0
    )
    (tmp_path / "spec.yaml").write_text(
        f"model: {tiny_model}\ntraining_file: train.jsonl\nhyperparameters: {{n_epochs: 1, batch_size: 8}}\n"
        "training: {learning_rate: 3.0e-3}\n"
    )
    return tmp_path


def test_make_tiny_model_writes_a_loadable_model_with_a_readme(tmp_path, monkeypatch):
    done = lmtune_here("make-tiny-model", "model", cwd=tmp_path, monkeypatch=monkeypatch)
    assert done.exit_code == 0, done.output
    assert "random" in (tmp_path / "model" / "README.md").read_text().lower()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert AutoTokenizer.from_pretrained(tmp_path / "model").chat_template
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "model").config.model_type == "llama"


def test_make_sample_data_writes_tool_calling_rows_that_upload_accepts(tmp_path, monkeypatch):
    done = lmtune_here(
        "make-sample-data", "tools.jsonl", "--kind", "tools", "--examples", "12", cwd=tmp_path, monkeypatch=monkeypatch
    )
    assert done.exit_code == 0 and "12 tool-calling examples written" in done.output
    rows = validate_jsonl_file(tmp_path / "tools.jsonl")
    assert len(rows) == 12 and all(row.data["tools"] and row.data["messages"][1]["tool_calls"] for row in rows)
    assert any(message["role"] == "tool" for row in rows for message in row.data["messages"])


@pytest.mark.slow  # trains in a subprocess
def test_train_runs_a_job_with_a_progress_bar(workspace):
    done = lmtune("train", "spec.yaml", "--output", "run", cwd=workspace)
    assert done.returncode == 0, done.stderr
    assert "3/3" in done.stderr  # tqdm's step counter
    assert "done: 3 steps" in done.stdout
    assert len((workspace / "run" / "metrics.jsonl").read_text().splitlines()) == 3
    assert json.loads((workspace / "run" / "result.json").read_text())["steps"] == 3


def test_a_bad_spec_exits_non_zero_naming_the_field(workspace, monkeypatch):
    (workspace / "bad.yaml").write_text("model: m\ntraining_file: t.jsonl\nhyperparameters: {n_epochs: 0}\n")
    done = lmtune_here("train", "bad.yaml", "--output", "run", cwd=workspace, monkeypatch=monkeypatch)
    assert done.exit_code == 1
    assert "hyperparameters.n_epochs: must be" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_bad_training_file_exits_non_zero_with_its_line(workspace, monkeypatch):
    with (workspace / "train.jsonl").open("a") as handle:
        handle.write('{"messages": [{"role": "user", "content": "?"}]}\n')
    done = lmtune_here("train", "spec.yaml", "--output", "run", cwd=workspace, monkeypatch=monkeypatch)
    assert done.exit_code == 1
    assert "line 25: at least one message with the assistant role is required" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_unknown_model_exits_non_zero_with_what_to_do(workspace, monkeypatch):
    spec = (workspace / "spec.yaml").read_text().splitlines()
    (workspace / "spec.yaml").write_text("\n".join(["model: ./no-such-model", *spec[1:]]))
    done = lmtune_here("train", "spec.yaml", "--output", "run", cwd=workspace, monkeypatch=monkeypatch)
    assert done.exit_code == 1
    assert "cannot load model './no-such-model'" in done.stderr
