"""What a client can ask of lmtune, independent of HTTP: submit, cancel, pause, resume and delete a
job, each store write together with its disk effect, and delete a fine-tuned model. The other
resources have a module each: uploads.py (files), eval_service.py, webhook_service.py, exports.py.

The HTTP routes are thin adapters around these; errors carry the HTTP status and the field, and an
object that is not the caller's is a LookupError (404 in the API, as for one that does not exist).
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import IntegrityError

from lmtune import quotas, reinforcement, training_eval
from lmtune.catalogue import load_catalogue
from lmtune.dispatch import JobQueue
from lmtune.errors import RequestError
from lmtune.graders.schema import judged_by
from lmtune.layout import DataLayout
from lmtune.methods import ReinforcementMethod, method_for_shape
from lmtune.model_availability import ModelUnavailable, check_available
from lmtune.model_refs import ModelNotFound, ModelRef, resolve_model
from lmtune.problems import quote, quote_id
from lmtune.settings import Settings
from lmtune.spec import JobSpec
from lmtune.store import evals as eval_store
from lmtune.store import files as file_store
from lmtune.store import fine_tuned as fine_tuned_store
from lmtune.store import jobs as job_store
from lmtune.store.database import Database
from lmtune.store.idempotency import IdempotencyKey, KeyReused, earlier_answer, remember
from lmtune.store.jobs import TooManyActiveJobs, create_job, get_job, queue_name
from lmtune.store.models import File, Job, JobStatus
from lmtune.training_data import SHAPE_NAMES, DatasetError

T = TypeVar("T")

TRAINING_PURPOSE = "fine-tune"  # results CSVs have purpose fine-tune-results


def submit_job(
    settings: Settings,
    db: Database,
    queue: JobQueue,
    owner: str,
    spec: JobSpec,
    *,
    suffix: str | None = None,
    metadata: dict | None = None,
    gpus: int = 0,
    nodes: int = 1,
    idempotency_key: str | None = None,
    request_hash: str = "",
) -> Job:
    """Check that the model and files exist for this key and that it is within its quotas, store the
    job, and tell the workers. The answer never depends on the broker (`queue.send` does not raise):
    a job stored while it is down is sent when it is back. A repeat of an `idempotency_key` request
    (same `request_hash`) returns the first one's job, and sends it again if it is still queued: the
    first request may have stored it and stopped before sending (a repeated send is harmless). The
    model is a catalogue model, a fine-tuned model of this key, or one of its jobs' checkpoints."""
    idem = idempotency(owner, idempotency_key, "job", request_hash)
    earlier = earlier_object(db, idem, lambda object_id: get_job(db, object_id, owner))
    if earlier is not None:
        if earlier.status == JobStatus.QUEUED:
            queue.send(earlier)
        return earlier
    check_hardware(spec, gpus)
    check_inputs(settings, db, spec, owner)
    quotas.check_storage(settings, db, owner)
    try:
        with db.session() as session:
            job = create_job(
                db,
                owner=owner,
                spec=spec.model_dump(mode="json"),
                queue=queue_name(gpus, settings.queue_prefix),
                gpus=gpus,
                nodes=nodes,
                suffix=suffix,
                metadata=metadata,
                max_active=settings.quota_active_jobs,
                session=session,
            )
            if idem:
                remember(session, idem, job.id)
    except TooManyActiveJobs as full:
        raise quotas.too_many_jobs(settings.quota_active_jobs, full.active) from None
    except IntegrityError:  # the same key, sent twice at once: the other request stored the job
        return earlier_object(db, idem, lambda object_id: get_job(db, object_id, owner))
    queue.send(job)
    return job


def check_hardware(spec: JobSpec, gpus: int) -> None:
    """A job the workers of its queue cannot run (400). A 4-bit base needs a CUDA GPU: a CPU job
    (gpus 0) is refused here; a GPU worker without CUDA or bitsandbytes fails the job at its start
    with `quantization_unavailable` (the API cannot see the workers' hardware)."""
    if gpus == 0 and spec.training.lora is not None and spec.training.lora.quantize:
        raise RequestError(
            400,
            "training.lora.quantize: a 4-bit base (QLoRA, bitsandbytes NF4) trains on a CUDA GPU only; "
            "ask for gpus: 1 or more, or remove quantize to train LoRA on the CPU",
            param="training.lora.quantize",
            code="quantization_unavailable",
        )


def check_inputs(settings: Settings, db: Database, spec: JobSpec, owner: str) -> None:
    """The job's model and files exist for this key, and the files are training files (4xx if not)."""
    _check_model(settings, db, spec.model, owner)
    for field in ("training_file", "validation_file"):
        file_id = getattr(spec, field)
        if not file_id:
            continue
        row = file_store.get_file(db, file_id, owner)
        if row is None:
            raise RequestError(404, f"no file with id {quote_id(file_id)}", param=field, code="file_not_found")
        if row.purpose != TRAINING_PURPOSE:
            raise RequestError(
                400,
                f"{field}: {row.id} has purpose {row.purpose!r}; give a file uploaded with "
                f"purpose {TRAINING_PURPOSE!r}",
                param=field,
                code="invalid_file",
            )
        _check_rows_fit(spec, row, field)
        if isinstance(spec.method, ReinforcementMethod):
            _check_grader_fields(settings, spec.method, row, field)
    if isinstance(spec.method, ReinforcementMethod):  # a model grader's judge runs in the trainer
        for field, judge in judged_by(spec.method.reinforcement.grader).items():
            _check_judge(settings, db, judge, owner, f"method.reinforcement.grader.{field}", "the grader's judge")
    if spec.training.eval_id:
        _check_training_eval(settings, db, spec, owner)


def _check_training_eval(settings: Settings, db: Database, spec: JobSpec, owner: str) -> None:
    """training.eval_id: an eval of this key that a trainer can score (no model graders), whose
    criteria name the scores that early_stopping/keep_best follow, and whose item_schema every
    validation row fits as an item (lmtune/training_eval.py)."""
    param = "training.eval_id"
    evaluation = eval_store.get_eval(db, spec.training.eval_id, owner)
    if evaluation is None:
        raise RequestError(
            404, f"no eval with id {quote_id(spec.training.eval_id)}", param=param, code="eval_not_found"
        )
    try:
        found = training_eval.TrainingEval(
            id=evaluation.id,
            name=evaluation.name,
            item_schema=evaluation.data_source_config.get("item_schema", {}),
            testing_criteria=evaluation.testing_criteria,
        )
        metrics = training_eval.check_criteria(found.testing_criteria)
    except ValueError as error:
        raise RequestError(400, f"{param}: {str(error)[:1000]}", param=param) from None
    for criterion in found.testing_criteria:
        for judge in judged_by(criterion).values():
            _check_judge(
                settings, db, judge, owner, param, f"the judge of {evaluation.id}'s criterion {quote(criterion.name)}"
            )
    known = {f"valid_{name}" for name in [*metrics.values(), f"eval_{training_eval.PASS_RATE}"]}
    for field, metric in spec.training.followed_scores().items():
        if metric not in known:
            raise RequestError(
                400,
                f"{field}: the eval {evaluation.id} gives no metric {metric}; it gives {', '.join(sorted(known))}",
                param=field,
            )
    row = file_store.get_file(db, spec.validation_file, owner)
    try:
        training_eval.check_items_fit(DataLayout(settings.data_dir).resolve(row.path), found.item_schema)
    except training_eval.DatasetError as error:
        raise RequestError(
            400,
            f"validation_file does not fit the item_schema of {param} {evaluation.id}:\n{error}",
            param="validation_file",
            code="invalid_file",
        ) from None


def _check_rows_fit(spec: JobSpec, row: File, field: str) -> None:
    """A file of rows another method trains on is refused, naming its first such line and that method.
    A file stored before row shapes were kept holds supervised rows (preference rows were refused)."""
    method = spec.method
    shapes = sorted((row.row_shapes or {}).items(), key=lambda item: item[1])
    wrong = [(shape, f"line {line} of {row.id} is {SHAPE_NAMES[shape]} row, which trains") for shape, line in shapes]
    if row.row_shapes is None:
        wrong = [("chat", f"{row.id} holds chat, prompt/completion or text rows, which train")]
    for shape, what in wrong:
        if shape not in method.shapes:
            other = method_for_shape(shape)
            raise RequestError(
                400,
                f"{field}: {what} with method {other!r}; method {method.type!r} trains on "
                f'{method.rows}. Use method {{"type": "{other}"}}, or a file of {method.rows}',
                param=field,
                code="invalid_file",
            )


def _check_grader_fields(settings: Settings, method: ReinforcementMethod, row: File, field: str) -> None:
    """Every row has the fields the grader's templates read (`{{item.*}}`): found now, not when
    the trainer starts. Streamed: one line in memory."""
    try:
        for _ in reinforcement.check_prompt_file(
            DataLayout(settings.data_dir).resolve(row.path), method.reinforcement.grader, min_examples=1
        ):
            pass
    except DatasetError as error:
        raise RequestError(
            400, f"{field}: {row.id} does not fit the grader:\n{error}", param=field, code="invalid_file"
        ) from None


def resume_job(settings: Settings, db: Database, queue: JobQueue, job_id: str, owner: str) -> Job:
    """Queue a paused job again, within the key's quota of active jobs (LookupError, WrongState as the store)."""
    try:
        job = job_store.requeue_paused(db, job_id, owner, max_active=settings.quota_active_jobs)
    except TooManyActiveJobs as full:
        raise quotas.too_many_jobs(settings.quota_active_jobs, full.active) from None
    queue.send(job)
    return job


def cancel_job(db: Database, job_id: str, owner: str) -> Job:
    """A queued or paused job ends at once; a running one is asked to stop, and its worker stops the
    trainer (LookupError, WrongState as the store)."""
    return job_store.request_cancel(db, job_id, owner)


def pause_job(db: Database, job_id: str, owner: str) -> Job:
    """A running job is asked to pause: its trainer checkpoints and stops (LookupError, WrongState as the store)."""
    return job_store.request_pause(db, job_id, owner)


def delete_job(settings: Settings, db: Database, job_id: str, owner: str) -> Job:
    """A job that has ended or is paused, with its records, then its run folder once they are gone
    (LookupError, WrongState as the store)."""
    job = job_store.delete_job(db, job_id, owner)
    shutil.rmtree(DataLayout(settings.data_dir).job(job_id).root, ignore_errors=True)
    return job


def delete_fine_tuned_model(db: Database, model_id: str, owner: str) -> None:
    """The model leaves the key's models and stops answering as a job's base or in completions; its
    job's files stay until the job is deleted. A catalogue model is 403, as OpenAI answers for a
    model the key does not own."""
    if model_id in load_catalogue():
        raise RequestError(
            403,
            f"{model_id!r} is a catalogue model; only fine-tuned models can be deleted",
            param="model",
            code="model_not_deletable",
        )
    if not fine_tuned_store.delete_fine_tuned_model(db, model_id, owner):
        raise LookupError(model_id)


def idempotency(owner: str, key: str | None, kind: str, *request: str) -> IdempotencyKey | None:
    """The `Idempotency-Key` of a create request of `kind`, with a hash of what it asks."""
    if key is None:
        return None
    if not 1 <= len(key) <= 255:
        raise RequestError(400, "Idempotency-Key must have 1 to 255 characters", param="Idempotency-Key")
    return IdempotencyKey(owner, key, hashlib.sha256("\0".join((kind, *request)).encode()).hexdigest())


def earlier_object(db: Database, idem: IdempotencyKey | None, load: Callable[[str], T]) -> T | None:
    """What an earlier request with this key created, if any; 409 if it came with another body, or
    if what it created has been deleted since (its answer is gone; a new key creates another)."""
    if idem is None:
        return None
    try:
        object_id = earlier_answer(db, idem)
    except KeyReused:
        raise RequestError(
            409,
            f"Idempotency-Key {quote(idem.key)} was already used with a different request",
            param="Idempotency-Key",
            code="idempotency_key_reused",
        ) from None
    if not object_id:
        return None
    earlier = load(object_id)
    if earlier is None:
        raise RequestError(
            409,
            f"Idempotency-Key {quote(idem.key)} created {object_id}, which has been deleted since; "
            "send the request with a new key to create another",
            param="Idempotency-Key",
            code="idempotent_object_deleted",
        )
    return earlier


def _check_model(settings: Settings, db: Database, model: str, owner: str) -> None:
    """A catalogue model, a fine-tuned model of this key, or one of its jobs' checkpoints."""
    try:
        ref = resolve_model(db, DataLayout(settings.data_dir), model, owner)
    except ModelNotFound as error:
        raise RequestError(404, str(error), param="model", code="model_not_found") from None
    available(ref, model)


def _check_judge(settings: Settings, db: Database, model: str, owner: str, param: str, what: str) -> None:
    """A model grader's judge: a model of this key (as a job's model is), on this machine or fetchable."""
    try:
        ref = resolve_model(db, DataLayout(settings.data_dir), model, owner)
        check_available(ref, model)
    except ModelNotFound as error:
        raise RequestError(404, f"{param}: {what}: {error}", param=param, code="model_not_found") from None
    except ModelUnavailable as error:
        raise RequestError(503, f"{param}: {what}: {error}", param=param, code="model_not_available") from None


def available(ref: ModelRef, model: str) -> None:
    """503 at once for a model that is not on this machine and cannot be fetched (jobs and completions)."""
    try:
        check_available(ref, model)
    except ModelUnavailable as error:
        raise RequestError(503, str(error), param="model", code="model_not_available") from None
