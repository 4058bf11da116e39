"""GET /v1/fine_tuning/jobs/{id}/samples (lmtune): the model's answers to the sample prompts at each
checkpoint, as the trainer wrote them to the run folder's samples.jsonl."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from lmtune.layout import DataLayout
from lmtune.metrics_log import MetricsLog
from service.deps import OwnedJob, SettingsDep
from service.errors import documented
from service.schemas import ListResponse

router = APIRouter(prefix="/v1/fine_tuning/jobs/{job_id}", tags=["fine-tuning jobs"])


class Sample(BaseModel):
    prompt: str | list[dict[str, Any]] = Field(
        description="A plain prompt, or chat messages up to the assistant's turn"
    )
    tools: list[dict[str, Any]] | None = Field(None, description="The tools offered, for a tool-calling row")
    completion: str = Field(
        description="The greedy answer, up to training.sample_max_tokens tokens (tool calls as the model writes them)"
    )
    completion_tokens: int
    finish_reason: str
    reward: float | None = Field(
        None, description="Reinforcement jobs: the answer's grade by the job's grader, its reward in training"
    )
    grades: dict[str, float] | None = Field(
        None,
        description="Reinforcement jobs: each sub-grader's score for a multi grader, else the grader's own, by name",
    )


class SampleSet(BaseModel):
    id: str
    object: Literal["fine_tuning.job.samples"] = "fine_tuning.job.samples"
    created_at: int
    step: int
    generation_seconds: float = Field(description="Time the trainer spent answering these prompts")
    samples: list[Sample]


def sample_set_id(step: int) -> str:
    return f"ftsamples-step-{step}"


@router.get("/samples", response_model=ListResponse[SampleSet], responses=documented(404))
def list_samples(
    job: OwnedJob,
    settings: SettingsDep,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> ListResponse[SampleSet]:
    """Oldest first (by step): what the model answered at each checkpoint; `after` is the id of the
    last set seen. The prompts are `training.sample_prompts`, or the first of the validation file."""
    seen = re.fullmatch(r"ftsamples-step-(\d{1,12})", after or "")
    rows, more = MetricsLog(DataLayout(settings.data_dir).job(job.id).samples).page(
        int(seen.group(1)) if seen else 0, limit
    )
    return ListResponse(data=[SampleSet(id=sample_set_id(row["step"]), **row) for row in rows], has_more=more)
