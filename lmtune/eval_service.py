"""What a client can ask of evals, independent of HTTP: create, update and delete an eval, start a
run (checked: the model and files are this key's, the items fit the eval's schema), start one run per
checkpoint and the final model of a job, cancel and delete a run. Runs are queued through the same
`JobQueue` as jobs (a run has a queue and an id). An eval or run that is not the key's is a
LookupError, as for jobs (lmtune/services.py), which the HTTP adapter answers with a 404.
"""

from __future__ import annotations

import jsonschema
from pydantic import TypeAdapter, ValidationError

from lmtune import quotas
from lmtune.dispatch import JobQueue
from lmtune.errors import RequestError
from lmtune.eval_spec import CompletionsDataSource, CustomDataSourceConfig, FileId, RowsError, RunDataSource, rows
from lmtune.layout import DataLayout
from lmtune.model_refs import ModelNotFound, resolve_model
from lmtune.problems import quote
from lmtune.settings import Settings
from lmtune.spec import describe_validation_error
from lmtune.store import evals as eval_store
from lmtune.store import files as file_store
from lmtune.store import history
from lmtune.store.database import Database
from lmtune.store.fine_tuned import (
    checkpoint_model_id,
    fine_tuned_model_id,
    get_fine_tuned_model,
    split_checkpoint_model_id,
)
from lmtune.store.jobs import get_job
from lmtune.store.models import Eval, EvalRun, JobStatus

MAX_RUN_ITEMS = 10_000
_SOURCE = TypeAdapter(RunDataSource)
RUN_PARAM = "data_source"


def create_eval(
    db: Database,
    owner: str,
    config: CustomDataSourceConfig,
    testing_criteria: list[dict],
    *,
    name: str | None = None,
    metadata: dict | None = None,
) -> Eval:
    """An eval of this key: the item schema its runs' items must fit (400 if it is no JSON schema)
    and its testing criteria."""
    _check_item_schema(config)
    return eval_store.create_eval(
        db,
        owner,
        name=name or "eval",
        data_source_config=config.model_dump(mode="json"),
        testing_criteria=testing_criteria,
        eval_metadata=metadata,
    )


def update_eval(db: Database, eval_id: str, owner: str, *, name: str | None, metadata: dict | None) -> Eval:
    """A new name or metadata (None keeps what is there)."""
    fields = {"name": name, "eval_metadata": metadata}
    row = eval_store.update_eval(db, eval_id, owner, **{k: v for k, v in fields.items() if v is not None})
    if row is None:
        raise LookupError(eval_id)
    return row


def delete_eval(db: Database, eval_id: str, owner: str) -> None:
    """The eval with its runs and their output items; a run in progress stops at its next write."""
    if not eval_store.delete_eval(db, eval_id, owner):
        raise LookupError(eval_id)


def cancel_run(db: Database, eval_id: str, run_id: str, owner: str) -> EvalRun:
    """A queued run ends at once, a running one after its current batch; 409 for one that has ended."""
    try:
        return eval_store.cancel_run(db, run_id, eval_id, owner)
    except eval_store.WrongState as error:
        raise RequestError(409, str(error), code="invalid_state") from None


def delete_run(db: Database, eval_id: str, run_id: str, owner: str) -> None:
    """The run with its output items; a worker running it stops at its next write (its fence fails)."""
    eval_store.delete_run(db, run_id, eval_id, owner)


def _check_item_schema(config: CustomDataSourceConfig) -> None:
    try:
        jsonschema.validators.validator_for(config.item_schema).check_schema(config.item_schema)
    except jsonschema.SchemaError as error:
        raise RequestError(
            400,
            f"data_source_config.item_schema is not a valid JSON schema: {error.message[:300]}",
            param="data_source_config.item_schema",
        ) from None


def start_run(
    settings: Settings,
    db: Database,
    queue: JobQueue,
    owner: str,
    evaluation: Eval,
    data_source: dict,
    *,
    name: str | None = None,
    metadata: dict | None = None,
) -> EvalRun:
    """Check the data source for this key and store a queued run; the workers are told."""
    try:
        source = _parse_source(data_source)
    except ValidationError as error:
        raise RequestError(400, describe_validation_error(error), param=RUN_PARAM, code="invalid_value") from None
    model, job_id, step = "", None, None
    if isinstance(source, CompletionsDataSource):
        model = source.model
        _check_model(settings, db, model, owner)
        job_id, step = _job_and_step(db, model, owner)
    items = _items(settings, db, owner, source)
    _check_items(evaluation, items, source)
    quotas.check_storage(settings, db, owner)
    try:
        run = eval_store.create_run(
            db,
            owner,
            max_active=settings.quota_active_eval_runs,
            eval_id=evaluation.id,
            name=name or f"{model or 'jsonl'} on {evaluation.name}"[:256],
            model=model,
            data_source=data_source,
            run_metadata=metadata,
            queue=eval_store.eval_run_queue(settings.queue_prefix),
            items_total=len(items),
            job_id=job_id,
            step=step,
        )
    except eval_store.TooManyActiveRuns as full:
        raise RequestError(
            429,
            f"this key has {len(full.active)} eval runs queued or running, its limit "
            f"(LMTUNE_QUOTA_ACTIVE_EVAL_RUNS={settings.quota_active_eval_runs}); wait for one to end or cancel one "
            f"(e.g. {full.active[0]})",
            code="quota_exceeded",
        ) from None
    queue.send(run)
    return run


def start_job_runs(
    settings: Settings, db: Database, queue: JobQueue, owner: str, evaluation: Eval, job_id: str, data_source: dict
) -> list[EvalRun]:
    """One run per checkpoint the job keeps and one for its final model, with this data source
    (a `completions` source whose model is set here)."""
    job = get_job(db, job_id, owner)
    if job is None:
        raise RequestError(404, f"no fine-tuning job with id {quote(job_id)}", code="fine_tuning_job_not_found")
    checkpoints, _ = history.list_checkpoints(db, job.id, limit=1000)
    models = []
    if job.status == JobStatus.SUCCEEDED and job.fine_tuned_model:
        final_step = job.step
        models += [checkpoint_model_id(job.fine_tuned_model, c.step) for c in checkpoints if c.step != final_step] + [
            job.fine_tuned_model
        ]
    else:
        base = fine_tuned_model_id(job.spec["model"], job.suffix, job.id)
        models += [checkpoint_model_id(base, c.step) for c in checkpoints]
    if not models:
        raise RequestError(
            409, f"job {job.id} has no checkpoint and no final model yet to evaluate", code="invalid_state"
        )
    runs = []
    for model in sorted(models, key=lambda m: (split_checkpoint_model_id(m) or (m, 1 << 31))[1]):
        source = {**data_source, "type": "completions", "model": model}
        runs.append(
            start_run(settings, db, queue, owner, evaluation, source, name=f"{model} on {evaluation.name}"[:256])
        )
    return runs


def _parse_source(data_source: dict):
    return _SOURCE.validate_python(data_source)


def _check_model(settings: Settings, db: Database, model: str, owner: str) -> None:
    try:
        resolve_model(db, DataLayout(settings.data_dir), model, owner)
    except ModelNotFound as error:
        raise RequestError(404, str(error), param="data_source.model", code="model_not_found") from None


def _job_and_step(db: Database, model: str, owner: str) -> tuple[str | None, int | None]:
    """The job whose checkpoint or final model this is (its step), for the job page's scores."""
    checkpoint = split_checkpoint_model_id(model)
    if checkpoint:
        return checkpoint[0].rsplit(":", 1)[-1], checkpoint[1]
    row = get_fine_tuned_model(db, model, owner) if model.startswith("ft:") else None
    if row is None:
        return None, None
    job = get_job(db, row.job_id, owner)
    return row.job_id, job.step if job else None


def _items(settings: Settings, db: Database, owner: str, source) -> list:
    if isinstance(source.source, FileId):
        row = file_store.get_file(db, source.source.id, owner)
        if row is None:
            raise RequestError(
                404, f"no file with id {quote(source.source.id)}", param="data_source.source.id", code="file_not_found"
            )
        path = DataLayout(settings.data_dir).resolve(row.path)
    else:
        path = None
    try:
        found = rows(source.source, path, MAX_RUN_ITEMS)
    except (RowsError, ValidationError) as error:
        raise RequestError(400, f"data_source.source: {str(error)[:1000]}", param="data_source.source") from None
    if not found:
        raise RequestError(400, "data_source.source has no items", param="data_source.source")
    return found


def _check_items(evaluation: Eval, items: list, source) -> None:
    """Each item against the eval's item_schema; a jsonl run's items need their samples."""
    config = CustomDataSourceConfig.model_validate(evaluation.data_source_config)
    validator = jsonschema.validators.validator_for(config.item_schema)(config.item_schema)
    for index, row in enumerate(items):
        error = jsonschema.exceptions.best_match(validator.iter_errors(row.item))
        if error is not None:
            where = ".".join(str(p) for p in error.absolute_path) or "item"
            raise RequestError(
                400,
                f"data_source.source item {index}: {where}: {error.message[:300]} (the eval's item_schema)",
                param="data_source.source",
            )
        if source.type == "jsonl" and row.sample is None:
            raise RequestError(
                400,
                f"data_source.source item {index} has no sample: a jsonl run grades given samples "
                '({"item": {...}, "sample": {"output_text": ...}}); use a completions data source to sample a model',
                param="data_source.source",
            )
