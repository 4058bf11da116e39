"""Resolving a job's inputs for its trainer: the stored spec with the model name and file ids
turned into paths on this machine."""

from __future__ import annotations

from lmtune.graders.schema import with_judges
from lmtune.layout import DataLayout
from lmtune.methods import ReinforcementMethod
from lmtune.model_refs import ModelNotFound, resolve_model
from lmtune.spec import JobSpec
from lmtune.store import evals as eval_store
from lmtune.store import files as file_store
from lmtune.store.database import Database
from lmtune.store.models import Job
from lmtune.training_eval import TrainingEval
from workers.model_sources import loadable_source


class InputError(Exception):
    """An input the job names is gone or unknown: the job fails with this code."""

    def __init__(self, code: str, message: str, param: str):
        super().__init__(message)
        self.code, self.param = code, param


def trainer_spec(db: Database, data: DataLayout, job: Job) -> JobSpec:
    spec = JobSpec.model_validate(job.spec)
    update = {"model": model_source(db, data, spec.model, job.owner, job.id)}
    for name in ("training_file", "validation_file"):
        file_id = getattr(spec, name)
        if file_id:
            row = file_store.get_file(db, file_id, job.owner)
            if row is None:
                raise InputError("file_not_found", f"{name} {file_id} no longer exists", name)
            update[name] = str(data.resolve(row.path))
    if isinstance(spec.method, ReinforcementMethod):
        settings = spec.method.reinforcement
        grader = with_judges(
            settings.grader, lambda model: judge_source(db, data, model, job, "method.reinforcement.grader")
        )
        update["method"] = spec.method.model_copy(
            update={"reinforcement": settings.model_copy(update={"grader": grader})}
        )
    return spec.model_copy(update=update)


def training_eval(db: Database, data: DataLayout, job: Job) -> TrainingEval | None:
    """The eval `training.eval_id` names, as the trainer reads it from the run folder (it has no
    database); None without one."""
    eval_id = job.spec.get("training", {}).get("eval_id")
    if not eval_id:
        return None
    found = eval_store.get_eval(db, eval_id, job.owner)
    if found is None:
        raise InputError("eval_not_found", f"training.eval_id {eval_id} no longer exists", "training.eval_id")
    evaluation = TrainingEval(
        id=found.id,
        name=found.name,
        item_schema=found.data_source_config.get("item_schema", {}),
        testing_criteria=found.testing_criteria,
    )
    source = lambda model: judge_source(db, data, model, job, "training.eval_id")  # noqa: E731
    criteria = [with_judges(criterion, source) for criterion in evaluation.testing_criteria]
    return evaluation.model_copy(update={"testing_criteria": criteria})


def judge_source(db: Database, data: DataLayout, name: str, job: Job, param: str) -> str:
    """A model grader's judge as the trainer loads it (a LoRA checkpoint merged in the run folder)."""
    try:
        ref = resolve_model(db, data, name, job.owner)
    except ModelNotFound as error:
        raise InputError("model_not_found", f"{param}: a model grader's judge: {error}", param) from None
    return loadable_source(ref, data.job(job.id).judge_model(ref.id))


def model_source(db: Database, data: DataLayout, name: str, owner: str, job_id: str) -> str:
    """A catalogue model, a fine-tuned model or a checkpoint of this key, as a folder or hub id the
    trainer loads (a LoRA checkpoint is merged into its base first, in the job's run folder)."""
    try:
        ref = resolve_model(db, data, name, owner)
    except ModelNotFound as error:
        raise InputError("model_not_found", str(error), "model") from None
    return loadable_source(ref, data.job(job_id).start_model)
