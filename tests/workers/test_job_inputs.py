"""What the worker hands the trainer for training.eval_id: the eval as the key stored it, or a failure
naming the eval when it was deleted after the job was created; and a model grader's judge as a
folder the trainer loads."""

import pytest

from lmtune.layout import DataLayout
from lmtune.store import evals as eval_store
from lmtune.store.models import Job
from lmtune.training_eval import TrainingEval
from tests.helpers import EXACT
from workers.job_inputs import InputError, judge_source, training_eval

JUDGE = {
    "type": "score_model",
    "name": "judge",
    "model": "lmtune-tiny",
    "input": [{"role": "user", "content": "Rate {{sample.output_text}}"}],
}


def job_with_eval(db, criterion: dict) -> tuple:
    """A job of key-a naming a stored eval of one criterion, and the eval."""
    evaluation = eval_store.create_eval(
        db,
        "key-a",
        name="answers",
        data_source_config={"type": "custom", "item_schema": {"type": "object"}},
        testing_criteria=[criterion],
    )
    return Job(id="ftjob-1", owner="key-a", spec={"training": {"eval_id": evaluation.id}}), evaluation


def test_the_job_s_eval_is_handed_over_and_a_deleted_one_fails_the_job(db, tmp_path):
    data = DataLayout(tmp_path)
    job, evaluation = job_with_eval(db, EXACT)
    assert training_eval(db, data, job) == TrainingEval(
        id=evaluation.id, name="answers", item_schema={"type": "object"}, testing_criteria=[EXACT]
    )
    assert training_eval(db, data, Job(id="ftjob-2", owner="key-a", spec={"training": {}})) is None
    assert eval_store.delete_eval(db, evaluation.id, "key-a")
    with pytest.raises(InputError, match=f"training.eval_id {evaluation.id} no longer exists") as failure:
        training_eval(db, data, job)
    assert (failure.value.code, failure.value.param) == ("eval_not_found", "training.eval_id")


def test_a_judge_is_handed_to_the_trainer_as_a_folder_and_a_missing_one_fails_the_job(db, tmp_path):
    data = DataLayout(tmp_path)
    job, _ = job_with_eval(db, JUDGE)
    [criterion] = training_eval(db, data, job).testing_criteria
    assert criterion.model == str(data.builtin_model("lmtune-tiny"))  # the built-in model, made for the trainer
    assert (data.builtin_model("lmtune-tiny") / "config.json").exists()
    with pytest.raises(InputError, match="training.eval_id: a model grader's judge: no fine-tuned model") as failure:
        judge_source(db, data, "ft:lmtune-tiny:key-a:x:ftjob-9", job, "training.eval_id")
    assert (failure.value.code, failure.value.param) == ("model_not_found", "training.eval_id")
