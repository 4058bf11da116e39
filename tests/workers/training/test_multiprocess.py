import subprocess
import sys

import pytest
import yaml

from cli.sample_data import chat_examples, write_jsonl
from tests.helpers import metric_rows, train_losses


@pytest.mark.slow
def test_two_processes_give_the_losses_of_one(tmp_path, tiny_model):
    # 36 examples with batch 8: the last batch of each epoch has 4, split unevenly over 2 x 2 slices
    write_jsonl(chat_examples(36, seed=4, spread=0.6), tmp_path / "train.jsonl")
    write_jsonl(chat_examples(12, seed=5, spread=0.6), tmp_path / "valid.jsonl")
    spec = {
        "model": str(tiny_model),
        "training_file": "train.jsonl",
        "validation_file": "valid.jsonl",
        "hyperparameters": {"n_epochs": 2, "batch_size": 8},
        "training": {"learning_rate": 2e-3, "gradient_accumulation_steps": 2, "eval_every_steps": 2},
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    for processes in (1, 2):
        command = [
            sys.executable,
            "-m",
            "cli",
            "train",
            "spec.yaml",
            "--output",
            f"run{processes}",
            "--num-processes",
            str(processes),
        ]
        done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]

    assert train_losses(tmp_path / "run2") == pytest.approx(train_losses(tmp_path / "run1"), abs=1e-4)
    assert len(train_losses(tmp_path / "run1")) == 10
    valid = [[row.get("valid_loss") for row in metric_rows(tmp_path / f"run{n}")] for n in (1, 2)]
    assert valid[0] == pytest.approx(valid[1], abs=1e-4)
