"""The job page's eval scores in a real browser: one click runs an eval on every checkpoint and the
final model, and the scores appear beside the loss curve, a point per step."""

from __future__ import annotations

import json
import re

import pytest

from cli.sample_data import chat_examples
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
    client.evals.create(
        name="non-empty",
        data_source_config={"type": "custom", "item_schema": {"type": "object"}},
        testing_criteria=[
            {
                "type": "python",
                "name": "length",
                "source": "def grade(sample, item):\n    return min(len(sample['output_text']) / 20, 1)",
            }
        ],
    )

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
