"""DPO through the trainer: the per-step loss of TRL's DPOTrainer, ln 2 at the first step, its metrics
in metrics.jsonl, a reference kept with the run so that a killed run resumes to the same losses, two
processes giving the losses of one, and LoRA's reference being the base with the adapter off."""

import json
import math
import signal
import subprocess
import sys

import pytest
import torch
import yaml

from benchmarks.trl_reference import run_trl_dpo
from cli.sample_data import preference_examples, write_jsonl
from lmtune.layout import RunLayout, latest_checkpoint
from lmtune.spec import load_spec, parse_spec
from tests.helpers import metric_rows, train_losses
from tests.waiting import wait_while_progressing, working
from workers.training.loop import train

pytestmark = pytest.mark.slow  # trains, beside TRL or in subprocesses


def dpo_job(tmp_path, tiny_model, *, pairs=16, batch_size=4, accumulation=1, **training) -> dict:
    write_jsonl(preference_examples(pairs, seed=3, spread=0.5), tmp_path / "train.jsonl")
    return {
        "model": str(tiny_model),
        "training_file": str(tmp_path / "train.jsonl"),
        "seed": 5,
        "method": {"type": "dpo", "dpo": {"hyperparameters": {"n_epochs": 2, "batch_size": batch_size, "beta": 0.1}}},
        "training": {
            "learning_rate": 1e-3,
            "gradient_accumulation_steps": accumulation,
            "sample_prompts": [],
            **training,
        },
    }


@pytest.mark.parametrize(
    "accumulation, lora", [(1, None), (2, None), (1, {"r": 4, "alpha": 8})], ids=["full", "accumulation", "lora"]
)
def test_per_step_loss_equals_trls_dpo_trainer(tmp_path, tiny_model, accumulation, lora):
    # with LoRA, TRL's reference is the model with its adapter off, as lmtune's
    job = dpo_job(tmp_path, tiny_model, accumulation=accumulation, shuffle=False, warmup_ratio=0.2, weight_decay=0.01)
    spec = parse_spec({**job, "training": {**job["training"], "lora": lora}})
    train(spec, tmp_path / "lmtune")
    ours = train_losses(tmp_path / "lmtune")
    theirs = run_trl_dpo(spec, tmp_path / "trl").losses
    assert len(ours) == len(theirs) == 8
    assert ours == pytest.approx(theirs, abs=1e-4)
    assert ours[0] == pytest.approx(math.log(2), abs=1e-5)  # the model is its reference at the first step
    assert min(ours[1:]) < ours[0] - 0.05  # it trained: the match is not of two untouched models


def test_packed_pairs_train_as_padded_ones(tmp_path, tiny_model):
    for packing in (False, True):
        train(parse_spec(dpo_job(tmp_path, tiny_model, packing=packing, max_seq_length=1024)), tmp_path / f"{packing}")
    assert train_losses(tmp_path / "True") == pytest.approx(train_losses(tmp_path / "False"), abs=1e-4)


def test_each_step_reports_the_rewards_margin_and_accuracy_and_validation_on_pairs(tmp_path, tiny_model):
    job = dpo_job(tmp_path, tiny_model, eval_every_steps=2)
    write_jsonl(preference_examples(6, seed=9), tmp_path / "valid.jsonl")
    train(parse_spec({**job, "validation_file": str(tmp_path / "valid.jsonl")}), tmp_path / "run")
    rows = metric_rows(tmp_path / "run")
    for row in rows:
        assert row["train_rewards_margin"] == pytest.approx(row["train_rewards_chosen"] - row["train_rewards_rejected"])
        assert 0 <= row["train_preference_accuracy"] <= 1
    assert rows[0]["train_rewards_chosen"] == pytest.approx(0, abs=1e-5)  # the reference is the starting model
    measured = [row for row in rows if "valid_loss" in row]
    assert [row["step"] for row in measured] == [2, 4, 6, 8]
    assert measured[-1]["valid_preference_accuracy"] == 1.0 and measured[-1]["valid_rewards_margin"] > 0
    assert "train_mean_token_accuracy" not in rows[0]
    stored = torch.load(RunLayout(tmp_path / "run").reference_logps, weights_only=True)
    assert stored["train"].shape == (16, 2) and stored["valid"].shape == (6, 2)


def test_a_killed_run_resumes_to_the_same_losses(tmp_path, tiny_model):
    job = dpo_job(tmp_path, tiny_model, pairs=24, checkpoint_every_steps=3, keep_checkpoints=10, shuffle=True)
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(job))
    train(load_spec(tmp_path / "spec.yaml"), tmp_path / "reference")
    reference = train_losses(tmp_path / "reference")
    assert len(reference) == 12

    run = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "cli", "train", str(tmp_path / "spec.yaml"), "--output", str(run)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def newest() -> int:
        assert process.poll() is None, "the run ended before it could be interrupted"
        return (latest_checkpoint(run / "checkpoints") or (0,))[0]

    wait_while_progressing(newest, lambda step: step >= 3, progress=lambda _: working(process.pid), interval=0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = latest_checkpoint(run / "checkpoints")[0]
    assert killed_at < 12
    reference_file = RunLayout(run).reference_logps
    kept = reference_file.read_bytes()

    train(load_spec(tmp_path / "spec.yaml"), run)  # its model has moved: the kept reference is used
    assert reference_file.read_bytes() == kept
    assert [row["step"] for row in metric_rows(run)] == list(range(1, 13))
    assert train_losses(run) == pytest.approx(reference, abs=1e-4)


def test_two_processes_give_the_losses_of_one(tmp_path, tiny_model):
    # 18 pairs with batch 8: the last batch of each epoch has 2, split unevenly over 2 x 2 slices
    job = dpo_job(tmp_path, tiny_model, pairs=18, batch_size=8, accumulation=2, eval_every_steps=2)
    write_jsonl(preference_examples(7, seed=9), tmp_path / "valid.jsonl")
    job["validation_file"] = str(tmp_path / "valid.jsonl")
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(job))
    for processes in (1, 2):
        command = [sys.executable, "-m", "cli", "train", "spec.yaml", "--output", f"run{processes}"]
        done = subprocess.run(
            [*command, "--num-processes", str(processes)], cwd=tmp_path, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-3000:]
    one, two = (metric_rows(tmp_path / f"run{n}") for n in (1, 2))
    assert len(one) == 6
    for name in ("train_loss", "train_rewards_margin"):
        assert [row[name] for row in two] == pytest.approx([row[name] for row in one], abs=1e-4), name
    # at step 1 the model is its reference: every margin is rounding noise around 0, and which pairs
    # it counts as won differs with how the batch was split (measured: 1 of 8 with one process, 0 with two)
    accuracy = [[row["train_preference_accuracy"] for row in rows[1:]] for rows in (one, two)]
    assert accuracy[1] == pytest.approx(accuracy[0], abs=1e-4)
    assert [row.get("valid_loss") for row in two] == pytest.approx([row.get("valid_loss") for row in one], abs=1e-4)


def test_lora_takes_the_base_with_its_adapter_off_as_the_reference(tmp_path, tiny_model):
    job = dpo_job(tmp_path, tiny_model, lora={"r": 4}, shuffle=False)
    train(parse_spec(job), tmp_path / "run")
    losses = train_losses(tmp_path / "run")
    assert losses[0] == pytest.approx(math.log(2), abs=1e-5) and min(losses) < losses[0]
    assert json.loads((tmp_path / "run" / "run.json").read_text())["hyperparameters"]["beta"] == 0.1
    # computed again from the trained run (its adapter has moved), with the adapter off: the same reference
    layout = RunLayout(tmp_path / "run")
    first = torch.load(layout.reference_logps, weights_only=True)["train"]
    layout.reference_logps.unlink()
    layout.result.unlink()  # the run resumes at its last checkpoint, where the adapter has moved
    train(parse_spec(job), tmp_path / "run")
    torch.testing.assert_close(torch.load(layout.reference_logps, weights_only=True)["train"], first)
