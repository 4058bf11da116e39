"""/v1/evals (OpenAI's Evals API: evals, runs, output items) and lmtune's runs over a job's checkpoints
(/v1/fine_tuning/jobs/{job_id}/evals)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from lmtune import eval_service
from lmtune.store import evals as eval_store
from lmtune.store.models import Eval, EvalRun
from service.deps import DbDep, OwnedJob, OwnerDep, QueueDep, SettingsDep
from service.errors import documented, not_found
from service.eval_schemas import (
    EvalCreate,
    EvalDeleted,
    EvalObject,
    EvalRunObject,
    EvalUpdate,
    JobRunsCreate,
    OutputItemObject,
    RunCreate,
    RunDeleted,
)
from service.schemas import ListResponse, json_response

router = APIRouter(tags=["evals"])
Order = Literal["asc", "desc"]
Limit = Annotated[int, Query(ge=1, le=100)]


class Page(ListResponse):
    """OpenAI's eval lists name their first and last ids."""

    first_id: str | None = None
    last_id: str | None = None


def _page(items: list, more: bool) -> Response:
    return json_response(
        Page(
            data=items, has_more=more, first_id=items[0].id if items else None, last_id=items[-1].id if items else None
        )
    )


def _dashboard(request: Request) -> str:
    return str(request.base_url)


@router.post("/v1/evals", response_model=EvalObject, responses=documented(400))
def create_eval(body: EvalCreate, owner: OwnerDep, db: DbDep) -> Response:
    """An eval: the `custom` schema of its items and the graders of its testing criteria."""
    row = eval_service.create_eval(
        db,
        owner,
        body.data_source_config,
        [c.model_dump(mode="json", exclude_none=True) for c in body.testing_criteria],
        name=body.name,
        metadata=body.metadata,
    )
    return json_response(EvalObject.of(row))


@router.get("/v1/evals", response_model=Page, responses=documented())
def list_evals(
    owner: OwnerDep,
    db: DbDep,
    after: str | None = None,
    limit: Limit = 20,
    order: Order = "asc",
    order_by: Literal["created_at", "updated_at"] = "created_at",
) -> Response:
    rows, more = eval_store.list_evals(db, owner, after=after, limit=limit, order=order, order_by=order_by)
    return _page([EvalObject.of(row) for row in rows], more)


@router.get("/v1/evals/{eval_id}", response_model=EvalObject, responses=documented(404))
def retrieve_eval(eval_id: str, owner: OwnerDep, db: DbDep) -> Response:
    return json_response(EvalObject.of(owned_eval(db, eval_id, owner)))


@router.post("/v1/evals/{eval_id}", response_model=EvalObject, responses=documented(400, 404))
def update_eval(eval_id: str, body: EvalUpdate, owner: OwnerDep, db: DbDep) -> Response:
    """Rename an eval or replace its metadata."""
    try:
        row = eval_service.update_eval(db, eval_id, owner, name=body.name, metadata=body.metadata)
    except LookupError:
        raise not_found("eval", eval_id) from None
    return json_response(EvalObject.of(row))


@router.delete("/v1/evals/{eval_id}", response_model=EvalDeleted, responses=documented(404))
def delete_eval(eval_id: str, owner: OwnerDep, db: DbDep) -> EvalDeleted:
    """The eval with its runs and their output items; a run in progress stops."""
    try:
        eval_service.delete_eval(db, eval_id, owner)
    except LookupError:
        raise not_found("eval", eval_id) from None
    return EvalDeleted(eval_id=eval_id)


@router.post("/v1/evals/{eval_id}/runs", response_model=EvalRunObject, responses=documented(400, 404, 429))
def create_run(
    eval_id: str, body: RunCreate, request: Request, owner: OwnerDep, db: DbDep, settings: SettingsDep, queue: QueueDep
) -> Response:
    """Queue a run: `completions` samples the model (any of this key's) on each item and grades the
    samples; `jsonl` grades the samples given. A worker runs it; follow `status` and `result_counts`."""
    evaluation = owned_eval(db, eval_id, owner)
    source = body.data_source.model_dump(mode="json", exclude_none=True)
    run = eval_service.start_run(settings, db, queue, owner, evaluation, source, name=body.name, metadata=body.metadata)
    return json_response(EvalRunObject.of(run, _dashboard(request)))


@router.get("/v1/evals/{eval_id}/runs", response_model=Page, responses=documented(404))
def list_runs(
    eval_id: str,
    request: Request,
    owner: OwnerDep,
    db: DbDep,
    after: str | None = None,
    limit: Limit = 20,
    order: Order = "asc",
    status: Literal["queued", "in_progress", "completed", "canceled", "failed"] | None = None,
) -> Response:
    owned_eval(db, eval_id, owner)
    runs, more = eval_store.list_runs(db, eval_id, owner, after=after, limit=limit, order=order, status=status)
    return _page([EvalRunObject.of(run, _dashboard(request)) for run in runs], more)


@router.get("/v1/evals/{eval_id}/runs/{run_id}", response_model=EvalRunObject, responses=documented(404))
def retrieve_run(eval_id: str, run_id: str, request: Request, owner: OwnerDep, db: DbDep) -> Response:
    return json_response(EvalRunObject.of(owned_run(db, eval_id, run_id, owner), _dashboard(request)))


@router.post("/v1/evals/{eval_id}/runs/{run_id}/cancel", response_model=EvalRunObject, responses=documented(404, 409))
def cancel_run(eval_id: str, run_id: str, request: Request, owner: OwnerDep, db: DbDep) -> Response:
    """Cancel a run: a queued run at once, a running one after its current batch."""
    try:
        run = eval_service.cancel_run(db, eval_id, run_id, owner)
    except LookupError:
        raise not_found("eval run", run_id) from None
    return json_response(EvalRunObject.of(run, _dashboard(request)))


@router.delete("/v1/evals/{eval_id}/runs/{run_id}", response_model=RunDeleted, responses=documented(404))
def delete_run(eval_id: str, run_id: str, owner: OwnerDep, db: DbDep) -> RunDeleted:
    """The run with its output items; a running one stops at its next batch."""
    try:
        eval_service.delete_run(db, eval_id, run_id, owner)
    except LookupError:
        raise not_found("eval run", run_id) from None
    return RunDeleted(run_id=run_id)


@router.get("/v1/evals/{eval_id}/runs/{run_id}/output_items", response_model=Page, responses=documented(404))
def list_output_items(
    eval_id: str,
    run_id: str,
    owner: OwnerDep,
    db: DbDep,
    after: str | None = None,
    limit: Limit = 20,
    order: Order = "asc",
    status: Literal["pass", "fail"] | None = None,
) -> Response:
    """Each item with its sample and grades, in the data source's order; `status=fail` for the failures."""
    run = owned_run(db, eval_id, run_id, owner)
    rows, more = eval_store.list_output_items(db, run, after=after, limit=limit, order=order, status=status)
    return _page([OutputItemObject.of(row, run) for row in rows], more)


@router.get(
    "/v1/evals/{eval_id}/runs/{run_id}/output_items/{output_item_id}",
    response_model=OutputItemObject,
    responses=documented(404),
)
def retrieve_output_item(eval_id: str, run_id: str, output_item_id: str, owner: OwnerDep, db: DbDep) -> Response:
    run = owned_run(db, eval_id, run_id, owner)
    row = eval_store.get_output_item(db, run, output_item_id)
    if row is None:
        raise not_found("output item", output_item_id)
    return json_response(OutputItemObject.of(row, run))


@router.post(
    "/v1/fine_tuning/jobs/{job_id}/evals",
    response_model=ListResponse[EvalRunObject],
    responses=documented(400, 404, 409, 429),
)
def run_eval_on_job(
    job_id: str,
    body: JobRunsCreate,
    request: Request,
    owner: OwnerDep,
    db: DbDep,
    settings: SettingsDep,
    queue: QueueDep,
) -> Response:
    """lmtune: run an eval on every checkpoint the job keeps and on its final model, one run each
    (`data_source`: a completions data source without `model`); their scores show beside the loss."""
    evaluation = owned_eval(db, body.eval_id, owner)
    runs = eval_service.start_job_runs(settings, db, queue, owner, evaluation, job_id, body.data_source)
    return json_response(ListResponse(data=[EvalRunObject.of(run, _dashboard(request)) for run in runs]))


@router.get(
    "/v1/fine_tuning/jobs/{job_id}/evals", response_model=ListResponse[EvalRunObject], responses=documented(404)
)
def job_eval_runs(job: OwnedJob, request: Request, db: DbDep) -> Response:
    """lmtune: the eval runs on this job's checkpoints and final model, oldest first, with their steps."""
    runs = eval_store.runs_of_job(db, job.id, job.owner)
    return json_response(ListResponse(data=[EvalRunObject.of(run, _dashboard(request)) for run in runs]))


def owned_eval(db, eval_id: str, owner: str) -> Eval:
    row = eval_store.get_eval(db, eval_id, owner)
    if row is None:
        raise not_found("eval", eval_id)
    return row


def owned_run(db, eval_id: str, run_id: str, owner: str) -> EvalRun:
    owned_eval(db, eval_id, owner)
    run = eval_store.get_run(db, run_id, eval_id, owner)
    if run is None:
        raise not_found("eval run", run_id)
    return run
