"""The tables: the truth about every file, job, event, checkpoint, API key and fine-tuned model.

Timestamps are Unix seconds (as the API shows them). Every object belongs to the API key that
made it (`owner`), and every query for a client is scoped by it.
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class JobStatus(StrEnum):
    """A job's status: OpenAI's, plus `paused`. Stored as its string value."""

    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class JobAction(StrEnum):
    """What a client can ask of a job (its routes: POST .../cancel, .../pause, .../resume, DELETE)."""

    CANCEL = "cancel"
    PAUSE = "pause"
    RESUME = "resume"
    DELETE = "delete"


# The actions each status allows: the one table the store's transitions check (WrongState, a 409) and
# the job object's `allowed_actions` shows, so the dashboard's buttons and the routes cannot disagree.
ALLOWED_ACTIONS: dict[JobStatus, tuple[JobAction, ...]] = {
    JobStatus.QUEUED: (JobAction.PAUSE, JobAction.CANCEL),  # paused at once, or cancelled at once
    JobStatus.RUNNING: (JobAction.PAUSE, JobAction.CANCEL),  # asked of its worker, which stops the trainer
    JobStatus.PAUSED: (JobAction.RESUME, JobAction.CANCEL, JobAction.DELETE),
    JobStatus.SUCCEEDED: (JobAction.DELETE,),
    JobStatus.FAILED: (JobAction.DELETE,),
    JobStatus.CANCELLED: (JobAction.DELETE,),
}


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    hashed: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 of the secret; the secret is never stored
    created_at: Mapped[int] = mapped_column(BigInteger)


class File(Base):
    __tablename__ = "files"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner: Mapped[str] = mapped_column(String(40), index=True)
    filename: Mapped[str] = mapped_column(String(500))
    purpose: Mapped[str] = mapped_column(String(40))
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    examples: Mapped[int] = mapped_column(Integer, default=0)
    # a training file's row shapes, each with its first line ({"chat": 1}); null for a file uploaded
    # before shapes were kept, which holds supervised rows only (preference rows were refused then)
    row_shapes: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    path: Mapped[str] = mapped_column(String(500))  # relative to the data folder
    created_at: Mapped[int] = mapped_column(BigInteger)


class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner: Mapped[str] = mapped_column(String(40), index=True)
    spec: Mapped[dict] = mapped_column(JSON)  # lmtune.spec.JobSpec, with the model name and file ids as given
    suffix: Mapped[str | None] = mapped_column(String(64), nullable=True)
    job_metadata: Mapped[dict | None] = mapped_column("metadata", JSON, nullable=True)
    gpus: Mapped[int] = mapped_column(Integer, default=0)
    nodes: Mapped[int] = mapped_column(Integer, default=1, server_default="1")  # machines, each with `gpus` GPUs
    queue: Mapped[str] = mapped_column(String(40))
    status: Mapped[JobStatus] = mapped_column(
        Enum(
            JobStatus,
            native_enum=False,
            create_constraint=False,
            length=20,
            values_callable=lambda e: [m.value for m in e],
        ),
        index=True,
    )
    created_at: Mapped[int] = mapped_column(BigInteger, index=True)
    started_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    finished_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    error_code: Mapped[str | None] = mapped_column(String(60), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    error_param: Mapped[str | None] = mapped_column(String(100), nullable=True)
    fine_tuned_model: Mapped[str | None] = mapped_column(String(300), nullable=True)
    trained_tokens: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    hyperparameters: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # resolved, once known
    result_file_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    # delivery and fencing: each run of the job is an attempt; only the current one may write
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    # attempts that crashed or lost their worker; hand-backs (pause, worker shutdown) do not count
    failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    lease_owner: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease_expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    pause_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # progress
    step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int | None] = mapped_column(Integer, nullable=True)
    estimated_finish: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    latest_metrics: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    # bytes in the run folder when last measured (each checkpoint, the end): counts towards the storage quota
    output_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (UniqueConstraint("job_id", "type", "step", name="one_metrics_event_per_step"),)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)  # newest first by seq
    id: Mapped[str] = mapped_column(String(40), unique=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    level: Mapped[str] = mapped_column(String(10))
    type: Mapped[str] = mapped_column(String(20))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    step: Mapped[int | None] = mapped_column(Integer, nullable=True)  # set on metrics events only


class Checkpoint(Base):
    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("job_id", "step", name="one_checkpoint_per_step"),)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[int] = mapped_column(BigInteger)
    path: Mapped[str] = mapped_column(String(500))  # relative to the data folder
    metrics: Mapped[dict | None] = mapped_column(JSON, nullable=True)


class FineTunedModel(Base):
    __tablename__ = "fine_tuned_models"
    id: Mapped[str] = mapped_column(String(300), primary_key=True)  # ft:<base>:<suffix>:<job id>
    owner: Mapped[str] = mapped_column(String(40), index=True)
    base_model: Mapped[str] = mapped_column(String(300))
    job_id: Mapped[str] = mapped_column(String(40))
    path: Mapped[str] = mapped_column(String(500))  # relative to the data folder
    created_at: Mapped[int] = mapped_column(BigInteger)


class IdempotentRequest(Base):
    """The first answer to a create request sent with an `Idempotency-Key` header, kept 24 h."""

    __tablename__ = "idempotent_requests"
    owner: Mapped[str] = mapped_column(String(40), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))  # sha256 of what was asked: another body is a conflict
    object_id: Mapped[str] = mapped_column(String(40))  # the file or job it created
    created_at: Mapped[int] = mapped_column(BigInteger)


class Eval(Base):
    """OpenAI's eval: what an item looks like (data_source_config) and how a sample is graded
    (testing_criteria: lmtune.graders.schema.TestingCriterion, as given)."""

    __tablename__ = "evals"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner: Mapped[str] = mapped_column(String(40), index=True)
    name: Mapped[str] = mapped_column(String(256))
    data_source_config: Mapped[dict] = mapped_column(JSON)
    testing_criteria: Mapped[list] = mapped_column(JSON)
    eval_metadata: Mapped[dict | None] = mapped_column("metadata", JSON, nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)


class EvalRun(Base):
    """A run of an eval over a data source: queued, claimed by a worker like a job (attempt, lease,
    fencing), its output items written in batches, its counts at the end. OpenAI's statuses."""

    __tablename__ = "eval_runs"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner: Mapped[str] = mapped_column(String(40), index=True)
    eval_id: Mapped[str] = mapped_column(ForeignKey("evals.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(256))
    model: Mapped[str] = mapped_column(String(512))  # the sampled model; "" for a jsonl data source
    data_source: Mapped[dict] = mapped_column(JSON)
    run_metadata: Mapped[dict | None] = mapped_column("metadata", JSON, nullable=True)
    queue: Mapped[str] = mapped_column(String(80))
    status: Mapped[str] = mapped_column(String(20), index=True)  # queued, in_progress, completed, failed, canceled
    created_at: Mapped[int] = mapped_column(BigInteger)
    started_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    finished_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    error_code: Mapped[str | None] = mapped_column(String(60), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    # progress and results: counts over the items graded so far, final once completed
    items_total: Mapped[int | None] = mapped_column(Integer, nullable=True)
    result_counts: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    per_criteria: Mapped[list | None] = mapped_column(JSON, nullable=True)
    per_model_usage: Mapped[list | None] = mapped_column(JSON, nullable=True)
    # the job whose checkpoint or final model was sampled (lmtune: scores beside the loss curve)
    job_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # delivery and fencing, as a job's
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease_expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)


class EvalOutputItem(Base):
    """One data source item of a run: its sample and each testing criterion's grade."""

    __tablename__ = "eval_output_items"
    __table_args__ = (UniqueConstraint("run_id", "datasource_item_id", name="one_output_per_item"),)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(48), unique=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("eval_runs.id", ondelete="CASCADE"), index=True)
    datasource_item_id: Mapped[int] = mapped_column(Integer)
    datasource_item: Mapped[dict] = mapped_column(JSON)
    sample: Mapped[dict] = mapped_column(JSON)
    results: Mapped[list] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(10))  # pass | fail (an errored grade fails)
    created_at: Mapped[int] = mapped_column(BigInteger)


class WebhookEndpoint(Base):
    """Where an API key's events of `event_types` are sent, signed with `secret` (a `whsec_…`
    string, kept to sign with); after a rotation that keeps it, also with the previous one until
    `previous_secret_expires_at`."""

    __tablename__ = "webhook_endpoints"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner: Mapped[str] = mapped_column(String(40), index=True)
    name: Mapped[str] = mapped_column(String(200))
    url: Mapped[str] = mapped_column(String(2048))
    event_types: Mapped[list] = mapped_column(JSON)
    secret: Mapped[str] = mapped_column(String(100))
    previous_secret: Mapped[str | None] = mapped_column(String(100), nullable=True)
    previous_secret_expires_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)


class WebhookEvent(Base):
    """Something an API key may be told of (a job ended), written with the change it reports."""

    __tablename__ = "webhook_events"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # evt_…, the body's id
    owner: Mapped[str] = mapped_column(String(40), index=True)
    type: Mapped[str] = mapped_column(String(60))
    object_id: Mapped[str] = mapped_column(String(60))  # the body's data.id
    created_at: Mapped[int] = mapped_column(BigInteger, index=True)


class WebhookDelivery(Base):
    """One event to one endpoint (the outbox row): pending until answered 2xx, or given up."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("due_webhook_deliveries", "status", "next_attempt_at"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # wh_…, the webhook-id header on every try
    event_id: Mapped[str] = mapped_column(ForeignKey("webhook_events.id", ondelete="CASCADE"), index=True)
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(20))  # pending, succeeded, failed (gave up)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # tries begun; a claim names its number
    next_attempt_at: Mapped[float] = mapped_column(Float)
    created_at: Mapped[int] = mapped_column(BigInteger)
    last_attempt_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(500), nullable=True)


class WorkerPresence(Base):
    """A running worker, renewed by its sweep: what it can take (queues) and what it has."""

    __tablename__ = "worker_presence"
    id: Mapped[str] = mapped_column(String(200), primary_key=True)  # host:pid, as its leases name it
    queues: Mapped[list] = mapped_column(JSON)
    gpus: Mapped[int] = mapped_column(Integer)
    gpu_memory_bytes: Mapped[list | None] = mapped_column(JSON, nullable=True)  # each GPU's total, when known
    memory_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # RAM it may use
    started_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[float] = mapped_column(Float, index=True)  # gone unless renewed by then


class GangMember(Base):
    """A worker in the gang that runs one attempt of a multi-node job: rank 0 claimed the job and
    hosts the rendezvous at `address` (host:port); the others joined (lmtune.store.gangs)."""

    __tablename__ = "gang_members"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    rank: Mapped[int] = mapped_column(Integer, primary_key=True)  # the node's rank
    attempt: Mapped[int] = mapped_column(Integer)
    worker: Mapped[str] = mapped_column(String(200))
    address: Mapped[str | None] = mapped_column(String(300), nullable=True)  # rank 0's rendezvous
    joined_at: Mapped[int] = mapped_column(BigInteger)


class Export(Base):
    """A job's final model or one of its checkpoints written in another format (GGUF) by a worker,
    kept in the run folder: queued, claimed like a job (attempt, lease, fencing). One row per
    (job, source, format, quantization): a second request finds it."""

    __tablename__ = "exports"
    __table_args__ = (UniqueConstraint("job_id", "source", "format", "quantization", name="one_export_per_kind"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner: Mapped[str] = mapped_column(String(40), index=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    source: Mapped[str] = mapped_column(String(40))  # "final" or the checkpoint's folder name (step-000120)
    step: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the checkpoint's; None for the final model
    format: Mapped[str] = mapped_column(String(20))
    quantization: Mapped[str] = mapped_column(String(20))
    queue: Mapped[str] = mapped_column(String(80))
    status: Mapped[str] = mapped_column(String(20), index=True)  # queued, running, succeeded, failed
    created_at: Mapped[int] = mapped_column(BigInteger)
    started_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    finished_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    error_code: Mapped[str | None] = mapped_column(String(60), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    progress: Mapped[float | None] = mapped_column(Float, nullable=True)  # 0..1 while written
    path: Mapped[str | None] = mapped_column(String(500), nullable=True)  # the folder, relative to the data folder
    bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # delivery and fencing, as a job's
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease_expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)
