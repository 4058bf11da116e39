"""OpenAI's Evals API and graders API objects (the `openai` SDK's types/evals, types/graders,
types/fine_tuning/alpha), with lmtune's additions as extra fields."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lmtune.bounds import at_most_items
from lmtune.eval_spec import CustomDataSourceConfig, RunDataSource
from lmtune.graders.grading import Grade
from lmtune.graders.schema import Grader, TestingCriterion
from lmtune.store.models import Eval, EvalOutputItem, EvalRun
from service.schemas import MetadataKey, MetadataValue

MAX_CRITERIA = 32
MAX_SAMPLE_CHARS = 1_000_000
Metadata = Annotated[dict[MetadataKey, MetadataValue] | None, at_most_items(16)]


class GraderRunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    grader: Grader
    model_sample: str = Field(max_length=MAX_SAMPLE_CHARS, description="the `sample` namespace's output_text")
    item: dict[str, Any] | None = Field(None, description="the `item` namespace")


class GraderValidateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    grader: Grader


class GraderValidateResponse(BaseModel):
    grader: dict[str, Any]


class GraderRunMetadata(BaseModel):
    name: str
    type: str
    errors: dict[str, Any]
    execution_time: float
    scores: dict[str, Any]
    token_usage: int | None
    sampled_model_name: str | None


class GraderRunResponse(BaseModel):
    reward: float
    metadata: GraderRunMetadata
    sub_rewards: dict[str, Any]
    model_grader_token_usage_per_model: dict[str, Any]

    @classmethod
    def of(cls, grader, grade: Grade) -> GraderRunResponse:
        tokens = sum(usage["total_tokens"] for usage in grade.usage.values()) if grade.usage else None
        return cls(
            reward=grade.score,
            metadata=GraderRunMetadata(
                name=grader.name,
                type=grader.type,
                errors=grade.errors,
                execution_time=round(grade.seconds, 6),
                scores=grade.sub_scores or {grader.name: grade.score},
                token_usage=tokens,
                sampled_model_name=getattr(grader, "model", None),
            ),
            sub_rewards=grade.sub_scores,
            model_grader_token_usage_per_model=grade.usage,
        )


class EvalCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, max_length=256)
    metadata: Metadata = None
    data_source_config: CustomDataSourceConfig = Field(
        description="`custom` only: lmtune has no stored completions or logs to draw from"
    )
    testing_criteria: Annotated[list[TestingCriterion], Field(min_length=1), at_most_items(MAX_CRITERIA)]


class EvalUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, min_length=1, max_length=256)
    metadata: Metadata = None


class EvalObject(BaseModel):
    id: str
    object: Literal["eval"] = "eval"
    created_at: int
    name: str
    metadata: dict[str, str] | None
    data_source_config: dict[str, Any]
    testing_criteria: list[dict[str, Any]]

    @classmethod
    def of(cls, row: Eval) -> EvalObject:
        config = CustomDataSourceConfig.model_validate(row.data_source_config)
        return cls(
            id=row.id,
            created_at=row.created_at,
            name=row.name,
            metadata=row.eval_metadata,
            data_source_config={"type": "custom", "schema": config.schema_shown()},
            testing_criteria=row.testing_criteria,
        )


class EvalDeleted(BaseModel):
    object: Literal["eval.deleted"] = "eval.deleted"
    deleted: bool = True
    eval_id: str


class RunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, max_length=256)
    metadata: Metadata = None
    data_source: RunDataSource


class JobRunsCreate(BaseModel):
    """lmtune: one run of `eval_id` on every kept checkpoint and the final model of the job."""

    model_config = ConfigDict(extra="forbid")
    eval_id: str = Field(min_length=1, max_length=64)
    data_source: dict[str, Any] = Field(
        description="a `completions` data source without `model` (source, input_messages, sampling_params)"
    )


class ApiError(BaseModel):
    code: str
    message: str


class ResultCounts(BaseModel):
    total: int = 0
    passed: int = 0
    failed: int = 0
    errored: int = 0


class EvalRunObject(BaseModel):
    id: str
    object: Literal["eval.run"] = "eval.run"
    created_at: int
    eval_id: str
    name: str
    model: str
    status: str = Field(description="queued, in_progress, completed, failed or canceled")
    data_source: dict[str, Any]
    metadata: dict[str, str] | None
    error: ApiError | None
    result_counts: ResultCounts
    per_testing_criteria_results: list[dict[str, Any]]
    per_model_usage: list[dict[str, Any]]
    report_url: str
    # lmtune's additions
    progress: dict[str, Any] = Field(description="lmtune: {graded, total} items")
    fine_tuning_job_id: str | None = Field(description="lmtune: the job whose checkpoint or final model was sampled")
    step: int | None = Field(description="lmtune: that checkpoint's step (the final model's last step)")
    per_testing_criteria_scores: list[dict[str, Any]] = Field(
        description="lmtune: the mean score of each criterion over the items graded"
    )

    @classmethod
    def of(cls, run: EvalRun, dashboard: str) -> EvalRunObject:
        counts = run.result_counts or {}
        error = ApiError(code=run.error_code or "error", message=run.error_message or "") if run.error_code else None
        page = f"#/jobs/{run.job_id}" if run.job_id else f"#/evals/{run.eval_id}/runs/{run.id}"
        criteria = run.per_criteria or []
        return cls(
            id=run.id,
            created_at=run.created_at,
            eval_id=run.eval_id,
            name=run.name,
            model=run.model,
            status=run.status,
            data_source=run.data_source,
            metadata=run.run_metadata,
            error=error,
            result_counts=ResultCounts(**{k: counts.get(k, 0) for k in ("total", "passed", "failed", "errored")}),
            per_testing_criteria_results=[
                {"testing_criteria": c["testing_criteria"], "passed": c["passed"], "failed": c["failed"]}
                for c in criteria
            ],
            per_model_usage=run.per_model_usage or [],
            report_url=f"{dashboard.rstrip('/')}/{page}",
            progress={"graded": counts.get("total", 0), "total": run.items_total},
            fine_tuning_job_id=run.job_id,
            step=run.step,
            per_testing_criteria_scores=[
                {"testing_criteria": c["testing_criteria"], "mean_score": c.get("mean_score")} for c in criteria
            ],
        )


class RunDeleted(BaseModel):
    object: Literal["eval.run.deleted"] = "eval.run.deleted"
    deleted: bool = True
    run_id: str


class OutputItemObject(BaseModel):
    id: str
    object: Literal["eval.run.output_item"] = "eval.run.output_item"
    created_at: int
    eval_id: str
    run_id: str
    status: str = Field(description="pass or fail (an errored grade fails)")
    datasource_item_id: int
    datasource_item: dict[str, Any]
    sample: dict[str, Any]
    results: list[dict[str, Any]]

    @classmethod
    def of(cls, row: EvalOutputItem, run: EvalRun) -> OutputItemObject:
        return cls(
            id=row.id,
            created_at=row.created_at,
            eval_id=run.eval_id,
            run_id=run.id,
            status=row.status,
            datasource_item_id=row.datasource_item_id,
            datasource_item=row.datasource_item,
            sample=row.sample,
            results=row.results,
        )
