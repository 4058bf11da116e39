"""A job with training.eval_id through real PostgreSQL, Redis and `lmtune worker` processes: the worker
hands the trainer the eval, each evaluation's scores reach the job's metrics events and results file,
and keep_best keeps (and finishes with) the best-scoring checkpoint."""

import csv

import pytest

from cli.sample_data import chat_examples
from lmtune.dispatch import CeleryJobQueue
from lmtune.services import submit_job
from lmtune.spec import parse_spec
from lmtune.store import evals as eval_store
from lmtune.store import history
from tests.deployment import OWNER
from tests.helpers import FUZZY, metric_rows

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.parametrize("database_url", ["postgresql"], indirect=True),
]


def test_a_job_records_an_eval_s_scores_at_each_evaluation_and_keeps_the_best_scoring_checkpoint(deployment):
    evaluation = eval_store.create_eval(
        deployment.db,
        OWNER,
        name="capitals",
        data_source_config={"type": "custom", "item_schema": {"type": "object", "required": ["answer"]}},
        testing_criteria=[FUZZY],
    )
    spec = parse_spec(
        {
            "model": "lmtune-tiny",
            "training_file": deployment.upload(chat_examples(32, seed=11, spread=0.5)),
            "validation_file": deployment.upload(chat_examples(12, seed=12, spread=0.5)),
            "hyperparameters": {"n_epochs": 4, "batch_size": 8},
            "training": {
                "learning_rate": 3e-3,
                "lr_scheduler": "constant",
                "sample_prompts": [],
                "eval_every_steps": 2,
                "checkpoint_every_steps": 100,
                "keep_checkpoints": 1,
                "eval_id": evaluation.id,
                "eval_max_tokens": 16,
                "keep_best": {"metric": "valid_eval_fuzzy"},
            },
        }
    )
    job = submit_job(deployment.settings, deployment.db, CeleryJobQueue(deployment.settings), OWNER, spec)
    deployment.start_worker()
    done = deployment.wait_for(job.id, lambda j: j.status in ("succeeded", "failed"), what="an end")
    assert done.status == "succeeded", done.error_message

    run = deployment.settings.data_dir / "jobs" / job.id
    scores = {row["step"]: row["valid_eval_fuzzy"] for row in metric_rows(run) if "valid_loss" in row}
    assert sorted(scores) == list(range(2, 17, 2))
    assert max(scores.values()) > min(scores.values()), "training should move the score"
    events = history.events_after_seq(deployment.db, job.id, 0)
    recorded = {e.data["step"]: e.data.get("valid_eval_fuzzy") for e in events if e.type == "metrics"}
    assert {step: recorded[step] for step in scores} == scores

    best = max(scores, key=lambda step: (scores[step], -step))
    steps = {c.step for c in history.list_checkpoints(deployment.db, job.id)[0]}
    assert steps == {best, 16}
    if best != 16:
        assert any(f"checkpoint of step {best}, with the best valid_eval_fuzzy" in e.message for e in events)
    results = deployment.settings.data_dir / "files" / f"{done.result_file_id}.csv"
    with results.open() as handle:
        columns = next(csv.reader(handle))
    assert "valid_eval_fuzzy" in columns and "valid_eval_pass_rate" in columns
