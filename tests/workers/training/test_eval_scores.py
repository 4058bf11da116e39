"""training.eval_id in the trainer: an eval's scores on greedy answers to the validation rows at each
evaluation, as metrics, and keep_best following a score."""

import json

import pytest
import torch
from safetensors.torch import load_file

from lmtune.metrics_log import MetricsLog
from tests.helpers import FUZZY, metric_rows
from workers.training.errors import InvalidDataError
from workers.training.loop import train

UPPER = {  # the validation rows' answers are their prompts in capitals
    "type": "string_check",
    "name": "shouts",
    "input": "{{sample.output_text}}",
    "reference": "{{item.messages[1].content}}",
    "operation": "ilike",
}


def write_eval(run, criteria=(FUZZY, UPPER)):
    run.mkdir(parents=True, exist_ok=True)
    (run / "eval.json").write_text(
        json.dumps({"id": "eval_1", "name": "capitals", "item_schema": {}, "testing_criteria": list(criteria)})
    )


def test_each_evaluation_records_the_eval_s_scores_and_keep_best_keeps_the_best_scoring_checkpoint(
    make_spec, chat_file, valid_file, tmp_path
):
    run = tmp_path / "run"
    write_eval(run)
    spec = make_spec(
        chat_file,
        valid_file,
        epochs=4,
        eval_every_steps=2,
        checkpoint_every_steps=100,
        keep_checkpoints=1,
        eval_id="eval_1",
        eval_max_tokens=16,
        keep_best={"metric": "valid_eval_fuzzy"},
        lr_scheduler="constant",
    )
    train(spec, run)
    evaluated = [row for row in metric_rows(run) if "valid_loss" in row]
    assert [row["step"] for row in evaluated] == list(range(2, 17, 2))
    for row in evaluated:
        assert {"valid_eval_fuzzy", "valid_eval_shouts", "valid_eval_pass_rate"} <= set(row)
        assert all(0 <= row[name] <= 1 for name in ("valid_eval_fuzzy", "valid_eval_shouts", "valid_eval_pass_rate"))
        # an item passes when every criterion passes: never more often than the string check
        assert row["valid_eval_pass_rate"] <= row["valid_eval_shouts"] + 1e-9
    assert not any("valid_eval_fuzzy" in row for row in metric_rows(run) if "valid_loss" not in row)
    scores = {row["step"]: row["valid_eval_fuzzy"] for row in evaluated}
    assert max(scores.values()) > min(scores.values()), "training should move the score"

    best = max(scores, key=lambda step: (scores[step], -step))  # the first of the highest
    kept = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert kept == sorted({f"step-{best:06d}", "step-000016"})
    final, chosen = (
        load_file(run / "final" / "model.safetensors"),
        load_file(run / "checkpoints" / f"step-{best:06d}" / "model.safetensors"),
    )
    assert all(torch.equal(final[name], chosen[name]) for name in chosen)
    # the loss falls to the end while the score peaks earlier: keep_best followed the score
    losses = {row["step"]: row["valid_loss"] for row in evaluated}
    assert best != 16 and losses[16] < losses[best]
    [notice] = MetricsLog(run / "notices.jsonl").read()
    assert notice["data"] == {"best_step": best, "metric": "valid_eval_fuzzy", "best": scores[best]}
    assert "with the best valid_eval_fuzzy" in notice["message"]


def test_a_trainer_not_handed_the_eval_fails_saying_so(make_spec, chat_file, valid_file, tmp_path):
    with pytest.raises(InvalidDataError, match="the eval eval_1 was not handed to the trainer"):
        train(make_spec(chat_file, valid_file, eval_id="eval_1"), tmp_path / "run")
