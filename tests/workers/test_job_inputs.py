"""What the worker hands the trainer for training.eval_id: the eval as the key stored it, or a failure
naming the eval when it was deleted after the job was created."""

import pytest

from lmtune.store import evals as eval_store
from lmtune.store.models import Job
from lmtune.training_eval import TrainingEval
from tests.helpers import EXACT
from workers.job_inputs import InputError, training_eval


def test_the_job_s_eval_is_handed_over_and_a_deleted_one_fails_the_job(db):
    evaluation = eval_store.create_eval(
        db,
        "key-a",
        name="answers",
        data_source_config={"type": "custom", "item_schema": {"type": "object"}},
        testing_criteria=[EXACT],
    )
    job = Job(id="ftjob-1", owner="key-a", spec={"training": {"eval_id": evaluation.id}})
    assert training_eval(db, job) == TrainingEval(
        id=evaluation.id, name="answers", item_schema={"type": "object"}, testing_criteria=[EXACT]
    )
    assert training_eval(db, Job(id="ftjob-2", owner="key-a", spec={"training": {}})) is None
    assert eval_store.delete_eval(db, evaluation.id, "key-a")
    with pytest.raises(InputError, match=f"training.eval_id {evaluation.id} no longer exists") as failure:
        training_eval(db, job)
    assert (failure.value.code, failure.value.param) == ("eval_not_found", "training.eval_id")
