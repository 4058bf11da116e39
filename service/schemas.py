"""OpenAI-shaped request and response bodies, with lmtune's additions as extra fields."""

from __future__ import annotations

import re
from typing import Annotated, Any, Generic, Literal, TypeVar

from fastapi import Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import to_json

from lmtune.methods import Method, method_echo
from lmtune.spec import MAX_INTEGRATIONS, Hyperparameters, Integration, TrainingOptions, at_most_items
from lmtune.store.fine_tuned import checkpoint_model_id, fine_tuned_model_id
from lmtune.store.models import (
    ALLOWED_ACTIONS,
    Checkpoint,
    Event,
    Export,
    File,
    FineTunedModel,
    Job,
    JobAction,
    JobStatus,
)

T = TypeVar("T")
ORGANIZATION = "org-lmtune"


def json_body(content: Any) -> Response:
    """Plain values (dicts, lists, strings, numbers, enums) serialised by pydantic-core, with no
    model built for them: for the hottest routes, which still declare their response model."""
    return Response(to_json(content), media_type="application/json")


def json_response(body: BaseModel) -> Response:
    """`body` serialised once, by pydantic. Returning a Response skips FastAPI's check of the
    returned object against the route's response_model (a second validation and serialisation);
    the route still declares that model, which is what the OpenAPI document shows."""
    return Response(body.model_dump_json(), media_type="application/json")


class ListResponse(BaseModel, Generic[T]):
    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool = False


class FileList(ListResponse["FileObject"]):
    """OpenAI's files list names its first and last ids (null when empty)."""

    first_id: str | None
    last_id: str | None

    @classmethod
    def of(cls, files: list[FileObject]) -> FileList:
        return cls(data=files, first_id=files[0].id if files else None, last_id=files[-1].id if files else None)


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["processed"] = "processed"
    sha256: str = Field(description="lmtune: the sha256 of the content")
    examples: int = Field(description="lmtune: training examples in the file (0 for result files)")

    @classmethod
    def of(cls, row: File) -> FileObject:
        return cls(
            id=row.id,
            bytes=row.bytes,
            created_at=row.created_at,
            filename=row.filename,
            purpose=row.purpose,
            sha256=row.sha256,
            examples=row.examples,
        )


class Deleted(BaseModel):
    id: str
    object: str
    deleted: bool = True


MetadataKey = Annotated[str, Field(max_length=64)]
MetadataValue = Annotated[str, Field(max_length=512)]
SUFFIX_CHARACTERS = "letters, digits, '.', '_' and '-'"
SUFFIX_PATTERN = r"^[A-Za-z0-9._-]*$"


def _check_suffix(value: str | None) -> str | None:
    if value is not None and not re.fullmatch(SUFFIX_PATTERN, value):
        raise ValueError(f"may only contain {SUFFIX_CHARACTERS}")
    return value


class JobCreate(BaseModel):
    """OpenAI's job body; `training` and `gpus` are lmtune's (send them with the SDK's `extra_body`).
    Every field is bounded; the whole body may be at most 1 MiB."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1, max_length=256)
    training_file: str = Field(min_length=1, max_length=64)
    validation_file: str | None = Field(None, min_length=1, max_length=64)
    hyperparameters: Hyperparameters | None = Field(
        None, description="OpenAI's deprecated form of method.supervised.hyperparameters; still taken"
    )
    method: Method | None = Field(
        None, description='"supervised" (the default) or "dpo" (preference rows); "reinforcement" is refused for now'
    )
    suffix: Annotated[str | None, AfterValidator(_check_suffix)] = Field(
        None,
        max_length=64,
        json_schema_extra={"pattern": SUFFIX_PATTERN},
        description=f"Part of the fine-tuned model's name: up to 64 {SUFFIX_CHARACTERS}",
    )
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    metadata: Annotated[dict[MetadataKey, MetadataValue] | None, at_most_items(16)] = Field(
        None, max_length=16, description="Up to 16 pairs; keys up to 64 characters, values up to 512"
    )
    integrations: Annotated[list[Integration] | None, at_most_items(MAX_INTEGRATIONS)] = Field(
        None,
        max_length=MAX_INTEGRATIONS,
        description="Experiment trackers: OpenAI's `wandb`, and lmtune's `tensorboard` and `mlflow`; credentials "
        "come from the workers' environment",
    )
    training: TrainingOptions = TrainingOptions()
    gpus: int = Field(0, ge=0, le=8, description="lmtune: GPUs for the job (0: CPU); picks the worker queue")
    nodes: int = Field(
        1, ge=1, le=64, description="lmtune: machines the job spans, each a worker of its queue with `gpus` GPUs"
    )


class ErrorObject(BaseModel):
    code: str
    message: str
    param: str | None = None


class Progress(BaseModel):
    step: int
    total_steps: int | None


class FineTuningJob(BaseModel):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    finished_at: int | None
    model: str
    fine_tuned_model: str | None
    organization_id: str = ORGANIZATION
    status: JobStatus = Field(description="OpenAI's statuses, plus `paused` (lmtune)")
    error: ErrorObject | None
    hyperparameters: dict[str, Any]
    method: dict[str, Any]
    seed: int
    training_file: str
    validation_file: str | None
    result_files: list[str]
    trained_tokens: int | None
    estimated_finish: int | None
    integrations: list[dict[str, Any]] = Field(description="as given at create: OpenAI's shape")
    metadata: dict[str, str] | None
    user_provided_suffix: str | None
    # lmtune's additions
    training: dict[str, Any] = Field(description="lmtune: the training options")
    progress: Progress = Field(description="lmtune: the last finished step")
    metrics: dict[str, Any] | None = Field(description="lmtune: the latest step's metrics")
    queue_position: int | None = Field(description="lmtune: 1 = next to start, while queued")
    attempt: int = Field(description="lmtune: how many times a worker has started the job")
    allowed_actions: list[JobAction] = Field(
        description="lmtune: what the job's status allows now (`cancel`, `pause`, `resume`, `delete`); "
        "any other action is refused with 409 invalid_state"
    )

    @classmethod
    def of(cls, job: Job, queue_position: int | None) -> FineTuningJob:
        return cls.model_validate(job_body(job, queue_position))


# the enums' values, as text: pydantic-core serialises an enum member about 2 µs slower than a string
_ACTION_NAMES = {status: [action.value for action in actions] for status, actions in ALLOWED_ACTIONS.items()}


def job_body(job: Job, queue_position: int | None) -> dict[str, Any]:
    """A job as FineTuningJob shows it, in plain values: the hot GET routes serialise it as it is
    (`json_body`), with no model built per job (a page of twenty cost half its CPU in building them);
    every value comes from the store, which validated it on the way in."""
    spec = job.spec
    method = method_echo(spec, job.hyperparameters)
    failed = job.status == JobStatus.FAILED
    return {
        "id": job.id,
        "object": "fine_tuning.job",
        "created_at": job.created_at,
        "finished_at": job.finished_at,
        "model": spec["model"],
        "fine_tuned_model": job.fine_tuned_model,
        "organization_id": ORGANIZATION,
        "status": job.status.value,
        "error": {"code": job.error_code, "message": job.error_message or "", "param": job.error_param}
        if failed
        else None,
        "hyperparameters": method[method["type"]]["hyperparameters"],
        "method": method,
        "seed": spec["seed"],
        "training_file": spec["training_file"],
        "validation_file": spec.get("validation_file"),
        "result_files": [job.result_file_id] if job.result_file_id else [],
        "trained_tokens": job.trained_tokens,
        "estimated_finish": job.estimated_finish if job.status == JobStatus.RUNNING else None,
        "integrations": spec.get("integrations", []),
        "metadata": job.job_metadata,
        "user_provided_suffix": job.suffix,
        "training": spec["training"],
        "progress": {"step": job.step, "total_steps": job.total_steps},
        "metrics": job.latest_metrics,
        "queue_position": queue_position,
        "attempt": job.attempt,
        "allowed_actions": list(_ACTION_NAMES[job.status]),
    }


class JobEvent(BaseModel):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: str
    message: str
    type: str
    data: dict[str, Any] = Field(
        description="a metrics event's values; empty for a message event (an object, as OpenAI)"
    )

    @classmethod
    def of(cls, event: Event) -> JobEvent:
        return cls(
            id=event.id,
            created_at=event.created_at,
            level=event.level,
            message=event.message,
            type=event.type,
            data=event.data or {},
        )


class JobCheckpoint(BaseModel):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    step_number: int
    metrics: dict[str, Any]
    download_url: str = Field(description="lmtune: the whole checkpoint as a tar archive")

    @classmethod
    def of(cls, row: Checkpoint, job: Job) -> JobCheckpoint:
        model = fine_tuned_model_id(job.spec["model"], job.suffix, job.id)
        return cls(
            id=row.id,
            created_at=row.created_at,
            fine_tuned_model_checkpoint=checkpoint_model_id(model, row.step),
            fine_tuning_job_id=job.id,
            step_number=row.step,
            metrics=row.metrics or {"step": row.step},
            download_url=f"/v1/fine_tuning/jobs/{job.id}/checkpoints/{row.id}/content",
        )


class ManifestEntry(BaseModel):
    path: str
    bytes: int
    sha256: str
    url: str


class ModelDownload(BaseModel):
    """lmtune: the download of a catalogue model that is not on this machine yet."""

    status: Literal["downloading", "failed"]
    bytes_done: int = Field(description="bytes written to the cache so far")
    bytes_total: int = Field(description="bytes of the files being downloaded (grows while they start)")
    error: str | None = Field(description="why it failed; the next job or completion needing the model retries")


class ModelObject(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    ready: bool = Field(
        True,
        description="lmtune: its files are on this machine; a catalogue model that is not is downloaded by the "
        "first job or completion that needs it, or refused at once when the hub is off or unreachable",
    )
    download: ModelDownload | None = Field(
        None, description="lmtune: a catalogue model's download while it runs, or how it failed; null otherwise"
    )

    @classmethod
    def of_fine_tuned(cls, row: FineTunedModel) -> ModelObject:
        return cls(id=row.id, created=row.created_at, owned_by=ORGANIZATION)


class ExportRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: str = Field("gguf", description="gguf (llama.cpp, Ollama)")
    quantization: str = Field("q8_0", description="f16 or q8_0")
    # strict: a step is an integer, not true or "5"; bounded by the database's integers
    step: int | None = Field(
        None, ge=1, le=2**63 - 1, strict=True, description="a checkpoint's step; none for the final model"
    )


class ExportError(BaseModel):
    code: str | None
    message: str


class ExportObject(BaseModel):
    """lmtune: a job's model written as GGUF by a worker; its files download like a checkpoint's."""

    id: str
    object: Literal["fine_tuning.job.export"] = "fine_tuning.job.export"
    fine_tuning_job_id: str
    step_number: int | None = Field(description="the checkpoint's step; null for the final model")
    format: str
    quantization: str
    status: Literal["queued", "running", "succeeded", "failed"]
    progress: float | None = Field(description="the share of tensors written, while running")
    created_at: int
    finished_at: int | None
    bytes: int | None = Field(description="the files' total size, what a download fetches; once succeeded")
    error: ExportError | None
    files_url: str = Field(description="GET lists the files (GGUF, Modelfile) with sizes, sha256 and URLs")

    @classmethod
    def of(cls, row: Export) -> ExportObject:
        failed = row.status == "failed"
        return cls(
            id=row.id,
            fine_tuning_job_id=row.job_id,
            step_number=row.step,
            format=row.format,
            quantization=row.quantization,
            status=row.status,
            progress=row.progress,
            created_at=row.created_at,
            finished_at=row.finished_at,
            bytes=row.bytes,
            error=ExportError(code=row.error_code, message=row.error_message or "") if failed else None,
            files_url=f"/v1/fine_tuning/jobs/{row.job_id}/exports/{row.id}/files",
        )
