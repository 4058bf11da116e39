"""/v1/fine_tuning/jobs: create, list, retrieve, cancel, pause, resume, delete, events, metrics, loss curve."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import secrets
from collections.abc import Callable
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import FileResponse, Response
from pydantic import ValidationError
from sse_starlette import ServerSentEvent

from lmtune import services
from lmtune.layout import DataLayout
from lmtune.metrics_log import MetricsLog
from lmtune.services import RequestError, submit_job
from lmtune.spec import JobSpec, describe_validation_error
from lmtune.store import history
from lmtune.store import jobs as job_store
from lmtune.store.jobs import TERMINAL, WrongState
from lmtune.store.models import Job, JobStatus
from service.deps import (
    DbDep,
    OwnedJob,
    OwnerDep,
    PresentedKey,
    QueueDep,
    ReadsDep,
    SettingsDep,
    known_key,
    owned_job,
)
from service.errors import documented, not_found
from service.schemas import (
    Deleted,
    FineTuningJob,
    JobCreate,
    JobEvent,
    ListResponse,
    job_body,
    json_body,
    json_response,
)
from service.streaming import EventStream

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["fine-tuning jobs"])
STREAM_POLL_SECONDS = 0.5


@router.post("", response_model=FineTuningJob, responses=documented(400, 404, 409, 429))
def create_job(
    body: JobCreate,
    owner: OwnerDep,
    db: DbDep,
    settings: SettingsDep,
    queue: QueueDep,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=255)] = None,
) -> FineTuningJob:
    """Create a job; it is queued at once. lmtune's `training` options and `gpus` go beside OpenAI's fields.
    With an `Idempotency-Key` header, a repeat within 24 h returns the first job (another body: 409)."""
    spec = spec_of(body)
    job = submit_job(
        settings,
        db,
        queue,
        owner,
        spec,
        suffix=body.suffix,
        metadata=body.metadata,
        gpus=body.gpus,
        nodes=body.nodes,
        idempotency_key=idempotency_key,
        request_hash=body.model_dump_json(),
    )
    return _present(db, job)


def spec_of(body: JobCreate) -> JobSpec:
    """The job spec of a create body; every field was validated as the body was parsed, against the
    same types the spec uses: what is checked here is how they go together (400)."""
    try:
        return JobSpec(
            model=body.model,
            training_file=body.training_file,
            validation_file=body.validation_file,
            seed=body.seed if body.seed is not None else secrets.randbelow(2**31),
            method=body.method.model_dump(exclude_unset=True) if body.method else None,
            hyperparameters=body.hyperparameters.model_dump(exclude_unset=True) if body.hyperparameters else None,
            training=body.training,
            integrations=body.integrations or [],
        )
    except ValidationError as error:
        raise RequestError(400, describe_validation_error(error), code="invalid_value") from None


# lmtune's job statuses (JobStatus), and OpenAI's `validating_files`, which its SDK may ask for: lmtune
# checks a file when it is uploaded and again when a job is created, so no job is ever in that
# status and the filter keeps none (an empty list, not a 400)
StatusFilter = Literal["queued", "running", "paused", "succeeded", "failed", "cancelled", "validating_files"]


@router.get("", response_model=ListResponse[FineTuningJob], responses=documented())
async def list_jobs(
    request: Request,
    api_key: PresentedKey,
    reads: ReadsDep,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    status: StatusFilter | None = None,
) -> Response:
    """Newest first; `metadata[key]=value` keeps the jobs whose metadata has that pair (as OpenAI);
    `status` (lmtune) keeps the jobs in that status."""
    wanted = {
        key[9:-1]: value
        for key, value in request.query_params.items()
        if key.startswith("metadata[") and key.endswith("]")
    }

    def page() -> tuple[list, bool, dict[str, int]]:  # rows with Job's attribute names
        owner, jobs, more = job_store.list_jobs(
            reads.db, api_key, after=after, limit=limit, metadata=wanted or None, status=status
        )
        known_key(owner)
        return jobs, more, job_store.queue_positions(reads.db, jobs)

    # the bodies are made on the loop: in a thread their Python work would pass the GIL back and forth
    jobs, more, positions = await reads.run(page)
    body = {"object": "list", "data": [job_body(job, positions.get(job.id)) for job in jobs], "has_more": more}
    return json_body(body)


@router.get("/{job_id}", response_model=FineTuningJob, responses=documented(404))
async def retrieve_job(job: OwnedJob, reads: ReadsDep) -> Response:
    # the job was read by its dependency; only a queued job's place needs another read
    queued = job.status == JobStatus.QUEUED
    return json_body(job_body(job, await reads.run(job_store.queue_position, reads.db, job) if queued else None))


@router.post("/{job_id}/cancel", response_model=FineTuningJob, responses=documented(404, 409))
def cancel_job(job_id: str, owner: OwnerDep, db: DbDep) -> FineTuningJob:
    """A queued or paused job is cancelled at once; a running one within seconds (its trainer is stopped)."""
    return _present(db, _transition(job_id, lambda: services.cancel_job(db, job_id, owner)))


@router.post("/{job_id}/pause", response_model=FineTuningJob, responses=documented(404, 409))
def pause_job(job_id: str, owner: OwnerDep, db: DbDep) -> FineTuningJob:
    """The trainer finishes its step, writes a checkpoint and stops; the status becomes `paused`."""
    return _present(db, _transition(job_id, lambda: services.pause_job(db, job_id, owner)))


@router.post("/{job_id}/resume", response_model=FineTuningJob, responses=documented(404, 409, 429))
def resume_job(job_id: str, owner: OwnerDep, db: DbDep, settings: SettingsDep, queue: QueueDep) -> FineTuningJob:
    """Queue a paused job again; it continues from its pause checkpoint."""
    return _present(db, _transition(job_id, lambda: services.resume_job(settings, db, queue, job_id, owner)))


@router.delete("/{job_id}", response_model=Deleted, responses=documented(404, 409))
def delete_job(job_id: str, owner: OwnerDep, db: DbDep, settings: SettingsDep) -> Deleted:
    """A job that has ended or is paused, with all it wrote: checkpoints, the final model (its
    fine-tuned model id stops answering), metrics and events; its disk leaves the key's storage
    quota. A queued or running job is cancelled first (409 until it has stopped)."""
    _transition(job_id, lambda: services.delete_job(settings, db, job_id, owner))
    return Deleted(id=job_id, object="fine_tuning.job")


def _transition(job_id: str, action: Callable[[], Job]) -> Job:
    """`action()`, a change of the job's state, with the store's refusals as HTTP errors."""
    try:
        return action()
    except LookupError:
        raise not_found("fine-tuning job", job_id) from None
    except WrongState as error:
        raise RequestError(409, str(error), code="invalid_state") from None


@router.get(
    "/{job_id}/events",
    response_model=ListResponse[JobEvent],
    responses={**documented(404, 429), 200: {"content": {"text/event-stream": {}}}},
)
async def list_events(
    request: Request,
    job_id: str,
    api_key: PresentedKey,
    reads: ReadsDep,
    settings: SettingsDep,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
    stream: bool = False,
    last_event_id: Annotated[str | None, Header(description="with `stream=true`: resume after this event")] = None,
):
    """Newest first. With `stream=true`: server-sent events, oldest first (`id:` is the event id), each
    new event as it is written, and a keep-alive comment when there is nothing to send, until the job
    ends (`data: [DONE]`). A reconnecting client's `Last-Event-ID` resumes after that event."""
    db = reads.db

    def streamed(job: Job) -> EventStream:
        after_seq = 0
        if last_event_id:  # a reconnect: resume after the last event the client saw (from the start if unknown)
            after_seq = history.event_seq(db, job.id, last_event_id) or 0
        on_close = request.app.state.stream_slots.take(job.owner)
        return EventStream(
            _event_stream(db, job.id, after_seq),
            on_close=on_close,
            keepalive_seconds=settings.stream_keepalive_seconds,
        )

    if stream:
        return await reads.run(lambda: streamed(owned_job(db, api_key, job_id)))
    # the key, the job and the page in one statement; the page's body is made on the loop
    owner, events, more = await reads.run(history.list_events, db, api_key, job_id, after=after, limit=limit)
    if events is None:
        known_key(owner)
        raise not_found("fine-tuning job", job_id)
    return json_response(ListResponse(data=[JobEvent.of(event) for event in events], has_more=more))


async def _event_stream(db, job_id: str, sent: int):
    while True:
        job = await asyncio.to_thread(job_store.get_job, db, job_id)
        finished = job.status in TERMINAL  # read before the events, so none written before the end is missed
        for event in await asyncio.to_thread(history.events_after_seq, db, job_id, sent):
            sent = event.seq
            yield ServerSentEvent(JobEvent.of(event).model_dump_json(), id=event.id)
        if finished:
            yield ServerSentEvent("[DONE]")
            return
        await asyncio.sleep(STREAM_POLL_SECONDS)


@router.get(
    "/{job_id}/metrics", responses={**documented(404), 200: {"content": {"application/json": {}, "text/csv": {}}}}
)
def job_metrics(
    job: OwnedJob,
    settings: SettingsDep,
    format: Annotated[str, Query(pattern="^(json|csv)$")] = "json",
) -> Response:
    """Every step's metrics (lmtune): JSON `{object: list, data: [...]}`, or CSV with `format=csv`."""
    rows = MetricsLog(DataLayout(settings.data_dir).job(job.id).metrics).read()
    if format == "json":
        return Response(json.dumps({"object": "list", "data": rows, "has_more": False}), media_type="application/json")
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return Response(buffer.getvalue(), media_type="text/csv")


@router.get("/{job_id}/loss.png", response_class=FileResponse, responses=documented(404))
def loss_plot(job: OwnedJob, settings: SettingsDep) -> FileResponse:
    """The loss curve (lmtune), redrawn at every checkpoint."""
    path = DataLayout(settings.data_dir).job(job.id).loss_plot
    if not path.exists():
        raise RequestError(404, "no loss curve yet: it is drawn at the first checkpoint", code="not_ready")
    return FileResponse(path, media_type="image/png")


def _present(db, job: Job) -> FineTuningJob:
    return FineTuningJob.of(job, job_store.queue_position(db, job))
