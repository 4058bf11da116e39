"""The job page's eval scores in a real browser: one click runs an eval on every checkpoint and the
final model, and the scores appear beside the loss curve, a point per step."""

from __future__ import annotations

import json
import re

import httpx
import pytest
from playwright.sync_api import expect

from cli.sample_data import chat_examples
from tests.dashboard.conftest import one_criterion_eval, sdk
from tests.waiting import wait_while_progressing, working

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:The Evals API is deprecated:DeprecationWarning"),
]


def test_one_click_scores_every_checkpoint_beside_the_loss(session, tuned):
    client, job = tuned
    service = session.service
    pid = service.process.pid
    steps = {c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job.id)} | {8}
    rows = [{"item": {"input": example["messages"][0]["content"]}} for example in chat_examples(4, seed=9)]
    client.files.create(file=("items.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode()), purpose="evals")
    one_criterion_eval(client, "non-empty", length_criterion(20))

    page = session.page
    session.open_with_key(f"#/jobs/{job.id}")
    scores = page.locator("section", has=page.get_by_role("heading", name="Eval scores"))
    scores.get_by_role("button", name="Evaluate every checkpoint").click()
    count = scores.locator("figure.chart .count")

    def plotted() -> int:
        found = re.match(r"(\d+) steps plotted", count.inner_text()) if count.count() else None
        return int(found[1]) if found else 0

    wait_while_progressing(
        plotted,
        lambda n: n == len(steps),
        progress=lambda n: (n, working(pid)),
        what=f"a score at each of the steps {sorted(steps)}",
        interval=0.5,
        diagnose=service.log_tail,
    )
    session.screenshot("scores")
    shown = scores.locator(".table-wrap tbody tr").all_inner_texts()  # (the chart legend is a table too)
    assert len(shown) == len(steps) and all("completed" in row for row in shown), shown


# a reinforcement job's grader: a multi grader of two, so that each has its chart line
DIGITS = "def grade(sample, item):\n    return sum(c.isdigit() for c in sample['output_text']) / 8\n"
TOPIC = {"type": "string_check", "name": "topic", "input": "{{item.topic}}", "reference": "numbers", "operation": "eq"}
GRADERS = {"digits": {"type": "python", "name": "digits", "source": DIGITS}, "topic": TOPIC}
MULTI = {"type": "multi", "name": "both", "graders": GRADERS, "calculate_output": "0.9 * digits + 0.1 * topic"}


def length_criterion(full: int) -> dict:
    """A python criterion: the answer's length in characters, over `full` (at most 1)."""
    source = f"def grade(sample, item):\n    return min(len(sample['output_text']) / {full}, 1)"
    return {"type": "python", "name": "length", "source": source}


def prompts(count: int) -> bytes:
    rows = [{"messages": [{"role": "user", "content": f"Say a number {i}"}], "topic": "numbers"} for i in range(count)]
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def chart(page, title: str):
    return page.locator(f'figure.chart[data-title="{title}"]')


def latest(chart) -> dict[str, tuple[float, ...]]:
    """A chart's text summary as {series label: (value, [spread,] step)}."""
    summary = chart.locator(".plot").get_attribute("aria-label").split(": ", 1)[1]
    found = re.findall(r"([\w ]+?) (-?[\d.e+-]+)(?: ± ([\d.e+-]+))? at step (\d+)(?:, |$)", summary)
    return {label: tuple(float(v) for v in values if v) for label, *values in found}


def test_a_reinforcement_job_charts_its_rewards_kl_lengths_and_eval_scores_and_shows_graded_samples(session):
    service, page = session.service, session.page
    client = sdk(service)
    evaluation = one_criterion_eval(client, "length", length_criterion(8))
    training = client.files.create(file=("prompts.jsonl", prompts(10)), purpose="fine-tune")
    validation = client.files.create(file=("valid.jsonl", prompts(10)), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model="lmtune-tiny",
        training_file=training.id,
        validation_file=validation.id,
        method={
            "type": "reinforcement",
            "reinforcement": {
                "grader": MULTI,
                "hyperparameters": {"n_epochs": 1, "batch_size": 2, "eval_interval": 2, "eval_samples": 2},
            },
        },
        extra_body={
            "training": {
                "learning_rate": 3e-3,
                "max_steps": 4,
                "checkpoint_every_steps": 2,
                "eval_id": evaluation.id,
                "eval_max_tokens": 8,
                "sample_max_tokens": 8,
                "grpo": {"group_size": 2, "max_completion_tokens": 8, "beta": 0.04},
            }
        },
    )
    session.open_with_key(f"#/jobs/{job.id}")
    status = page.locator(".status-line .badge")
    reward = chart(page, "Reward").locator(".count")
    wait_while_progressing(
        lambda: (status.inner_text(), reward.inner_text() if reward.count() else ""),
        lambda seen: seen[0] in ("succeeded", "failed", "cancelled"),
        progress=lambda seen: (seen, working(service.process.pid)),
        what="the end of the reinforcement job",
        interval=0.5,
        diagnose=service.log_tail,
    )
    assert status.inner_text() == "succeeded", service.log_tail()
    session.screenshot("reinforcement")
    rows = httpx.get(f"{service.url}/v1/fine_tuning/jobs/{job.id}/metrics", headers=auth(service)).json()["data"]
    last = rows[-1]
    assert [row["step"] for row in rows] == [1, 2, 3, 4]

    # each family of metrics is a chart, every point plotted, its latest values as the API has them
    plotted = {
        "Reward": 4,
        "Reward by grader": 4,
        "KL to the starting model": 4,
        "Answer length (tokens)": 4,
        "Loss": 4,
        "Eval scores during training": 2,
    }  # the eval scores at each eval_interval (2)
    for title, steps in plotted.items():
        expect(chart(page, title).locator(".count")).to_have_text(f"{steps} steps plotted")
    assert chart(page, "Token accuracy").count() == 0
    assert latest(chart(page, "Reward")) == {
        "train": pytest.approx((last["train_reward_mean"], last["train_reward_std"], 4), rel=1e-3, abs=1e-6),
        "valid": pytest.approx((last["valid_reward_mean"], 4), rel=1e-3, abs=1e-6),
    }
    assert latest(chart(page, "Reward by grader")) == {
        f"{split} {name}": pytest.approx((last[f"{split}_reward_{name}_mean"], 4), rel=1e-3, abs=1e-6)
        for split in ("train", "valid")
        for name in ("digits", "topic")
    }
    assert latest(chart(page, "KL to the starting model")) == {
        "train": pytest.approx((last["train_kl"], 4), rel=1e-3, abs=1e-6)
    }
    assert latest(chart(page, "Eval scores during training")) == {
        "length": pytest.approx((last["valid_eval_length"], 4), rel=1e-3, abs=1e-6),
        "pass rate": pytest.approx((last["valid_eval_pass_rate"], 4), rel=1e-3, abs=1e-6),
    }

    # the checkpoints table's rewards, and the sample answers at the last checkpoint with their grades
    checkpoints = page.get_by_role("region", name="Checkpoints, newest first")
    assert "Train reward" in checkpoints.locator("thead").inner_text()
    step, _, _, valid, train, *_ = checkpoints.locator("tr.checkpoint").first.inner_text().split("\t")
    assert step.startswith("4") and float(valid) == pytest.approx(last["valid_reward_mean"], rel=1e-3, abs=1e-6)
    assert float(train) == pytest.approx(last["train_reward_mean"], rel=1e-3, abs=1e-6)
    sets = httpx.get(f"{service.url}/v1/fine_tuning/jobs/{job.id}/samples", headers=auth(service)).json()["data"]
    samples = page.get_by_role("region", name=f"Sample answers at step {sets[-1]['step']}")
    shown = samples.locator("tr.sample")
    expect(shown).to_have_count(len(sets[-1]["samples"]))
    assert shown.locator(".answer").all_text_contents() == [s["completion"] for s in sets[-1]["samples"]]
    graded = [s for s in sets[-1]["samples"] if s.get("reward") is not None]
    assert samples.locator("td.grade").count() == (len(shown.all()) if graded else 0)  # a column only where graded
    for cell, sample in zip(samples.locator("td.grade").all_inner_texts(), graded):
        assert cell.startswith(f"reward {js_number(sample['reward'])}")
        assert all(f"{name} {js_number(score)}" in cell for name, score in (sample.get("grades") or {}).items())


def auth(service) -> dict:
    return {"Authorization": f"Bearer {service.key}"}


def js_number(value: float) -> str:
    """A number as the dashboard writes it (ui.js's number): integers whole, else 4 significant digits."""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.2e}".replace("e-0", "e-") if abs(value) < 1e-3 else f"{value:#.4g}".rstrip(".")
