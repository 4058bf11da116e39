"""POST /v1/fine_tuning/jobs/estimate (lmtune): what a job would cost, before it is created."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from lmtune.errors import RequestError
from lmtune.estimates import EstimateError, estimate_job
from lmtune.layout import DataLayout
from lmtune.services import check_inputs
from lmtune.store.jobs import queue_name
from service.deps import DbDep, OwnerDep, SettingsDep
from service.errors import documented
from service.routes.jobs import spec_of
from service.schemas import JobCreate

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["fine-tuning jobs"])


class JobEstimate(BaseModel):
    object: str = "fine_tuning.job.estimate"
    model: str
    queue: str
    total_steps: int
    hyperparameters: dict[str, Any] = Field(description="what every `auto` resolves to for this file")
    examples: dict[str, int] = Field(description="training, validation, truncated (cut), dropped (skipped)")
    tokens: dict[str, Any] = Field(
        description="per_epoch and trained (OpenAI's trained_tokens), and how they were counted: `tokenizer` "
        "(the model's own) or `guess` (its files are not on the API's machine yet)"
    )
    estimated_seconds: float | None = Field(description="the job's wall time once a worker starts it")
    estimated_seconds_basis: str = Field(description="earlier jobs measured, or the first guess")
    memory: dict[str, Any] = Field(
        description="estimated_bytes (peak, per GPU or of the CPU worker), available_bytes (the least a live "
        "worker of the queue has), per (gpu or cpu), fits"
    )
    warnings: list[str]


@router.post("/estimate", response_model=JobEstimate, responses=documented(400, 404))
def estimate(body: JobCreate, owner: OwnerDep, db: DbDep, settings: SettingsDep) -> JobEstimate:
    """The body of a job create, answered with what the job would take: steps, tokens counted with
    the model's tokenizer over the file, time from earlier jobs of the same model and options on
    the queue, peak memory against the queue's workers, and warnings. Nothing is created."""
    spec = spec_of(body)
    check_inputs(settings, db, spec, owner)
    queue = queue_name(body.gpus, settings.queue_prefix)
    try:
        found = estimate_job(db, DataLayout(settings.data_dir), owner, spec, queue, body.gpus)
    except EstimateError as error:
        raise RequestError(400, str(error), param="hyperparameters.batch_size", code="invalid_value") from None
    return JobEstimate(**found.as_dict())
