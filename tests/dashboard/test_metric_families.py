"""Which charts the job page draws from a job's metric names, and how a sample's grade reads: the
dashboard's DOM-free modules (service/dashboard/metric-families.js, sample-grades.js), run in Node."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

DASHBOARD = Path(__file__).resolve().parents[2] / "service" / "dashboard"
SUPERVISED = ["step", "total_steps", "tokens", "elapsed_seconds", "learning_rate", "train_loss", "valid_loss"]
SUPERVISED += ["train_mean_token_accuracy", "valid_mean_token_accuracy", "full_valid_loss"]
REINFORCEMENT = ["step", "learning_rate", "train_loss", "train_reward_mean", "train_reward_std", "train_kl"]
REINFORCEMENT += ["train_reward_digits_mean", "train_reward_topic_mean", "valid_reward_mean", "valid_reward_topic_mean"]
REINFORCEMENT += ["valid_reward_digits_mean", "train_completion_length", "train_clip_ratio", "train_truncated_ratio"]
REINFORCEMENT += ["train_grading_errors", "train_generation_seconds", "valid_eval_exact", "valid_eval_pass_rate"]


def run_module(module: str, call: str):
    """`call` evaluated in Node with `module`'s exports in scope, its value read back as JSON."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("no node on PATH: the dashboard's modules are tested in Node.js (apt-get install -y nodejs)")
    script = f"import * as m from {json.dumps((DASHBOARD / module).as_uri())}; console.log(JSON.stringify({call}));"
    done = subprocess.run([node, "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def charts(keys: list[str]) -> dict[str, list[dict]]:
    return {
        chart["title"]: chart["series"]
        for chart in run_module("metric-families.js", f"m.chartsFor({json.dumps(keys)})")
    }


def test_a_supervised_job_gets_its_loss_accuracy_and_learning_rate_charts():
    found = charts(SUPERVISED)
    assert list(found) == ["Loss", "Token accuracy", "Learning rate"]
    assert [(s["key"], s["label"]) for s in found["Loss"]] == [
        ("train_loss", "train"),
        ("valid_loss", "valid"),
        ("full_valid_loss", "full valid"),
    ]
    assert found["Loss"][2]["pointsOnly"]  # measured at epoch ends only
    assert found["Learning rate"] == [{"key": "learning_rate", "label": "learning rate", "color": "#6d28d9"}]


def test_a_reinforcement_job_gets_its_reward_with_its_spread_each_grader_kl_lengths_and_eval_scores():
    found = charts(REINFORCEMENT)
    assert list(found) == [
        "Loss",
        "Reward",
        "Reward by grader",
        "KL to the starting model",
        "Answer length (tokens)",
        "Clipped tokens and cut answers",
        "Eval scores during training",
        "Learning rate",
    ]
    assert [(s["key"], s["label"], s.get("spread")) for s in found["Reward"]] == [
        ("train_reward_mean", "train", "train_reward_std"),
        ("valid_reward_mean", "valid", None),  # no spread is measured on validation
    ]
    by_grader = [(s["key"], s["label"]) for s in found["Reward by grader"]]
    assert by_grader == [
        ("train_reward_digits_mean", "train digits"),
        ("valid_reward_digits_mean", "valid digits"),
        ("train_reward_topic_mean", "train topic"),
        ("valid_reward_topic_mean", "valid topic"),
    ]
    colors = {s["label"]: s["color"] for s in found["Reward by grader"]}
    assert colors["train digits"] == colors["valid digits"] != colors["train topic"]  # a colour per grader
    dashes = {s["label"]: s.get("dash") for s in found["Reward by grader"]}
    assert dashes["train digits"] is None and dashes["valid digits"]  # the split told by the line
    assert [(s["key"], s["label"]) for s in found["Eval scores during training"]] == [
        ("valid_eval_exact", "exact"),
        ("valid_eval_pass_rate", "pass rate"),
    ]
    assert all("dash" not in s for s in found["Eval scores during training"])  # one split: plain lines
    assert [s["label"] for s in found["KL to the starting model"]] == ["train"]


def test_without_its_spread_the_reward_has_no_band_and_a_dpo_job_keeps_its_own_charts():
    assert "spread" not in charts(["train_reward_mean"])["Reward"][0]
    dpo = charts(["train_loss", "train_rewards_chosen", "train_rewards_rejected", "train_rewards_margin",
                  "valid_rewards_margin", "train_preference_accuracy"])  # fmt: skip
    assert list(dpo) == ["Loss", "Rewards", "Preference accuracy"]
    assert [s["label"] for s in dpo["Rewards"]] == ["train chosen", "train rejected", "train margin", "valid margin"]


def test_metric_names_are_those_holding_a_number_in_some_row():
    rows = [{"step": 1, "train_loss": 2.0, "note": "x"}, {"step": 2, "valid_loss": None, "valid_eval_exact": 0.5}]
    assert sorted(run_module("metric-families.js", f"m.metricNames({json.dumps(rows)})")) == [
        "step",
        "train_loss",
        "valid_eval_exact",
    ]


def test_a_samples_grade_reads_as_its_reward_and_each_graders_score():
    samples = [
        {"reward": 0.75, "grades": {"digits": 0.5, "topic": 1}},
        {"reward": 0.123456},
        {"grades": {"exact": 0}},
        {"completion": "not graded"},
    ]
    texts = run_module("sample-grades.js", f"{json.dumps(samples)}.map((s) => [m.gradeText(s), m.isGraded(s)])")
    assert texts == [
        ["reward 0.7500 (digits 0.5000, topic 1)", True],
        ["reward 0.1235", True],
        ["exact 0", True],
        ["", False],
    ]
