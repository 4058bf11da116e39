"""The FastAPI application: OpenAI's fine-tuning API on lmtune's store, under /v1."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import Scope

from lmtune.dispatch import CeleryJobQueue
from lmtune.settings import Settings, load_settings
from lmtune.store.database import open_database
from service.body_limit import JSON_BODY_LIMIT, MULTIPART_OVERHEAD, BodyLimit, Limit
from service.deps import Reads
from service.errors import install_error_handlers
from service.inference_client import InferenceClient
from service.metrics import install_metrics
from service.openapi import install_openapi
from service.routes import (
    checkpoints,
    estimates,
    evals,
    exports,
    files,
    graders,
    inference,
    jobs,
    models,
    samples,
    webhooks,
)
from service.security_headers import NoSniff
from service.streaming import StreamSlots
from service.upload_gate import UploadGate
from service.web import install_web
from service.webhook_sender import WebhookSender


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        """The clients the app holds, made at start and closed at stop: the model server's connections
        (service/inference_client.py) and the webhook sender's (its test events)."""
        inference = app.state.inference = InferenceClient(settings.inference_url, settings.inference_secret)
        sender = app.state.webhook_sender = WebhookSender(
            settings.webhook_allow_private, settings.webhook_timeout_seconds
        )
        try:
            yield
        finally:
            await inference.aclose()
            await sender.close()

    app = FastAPI(
        lifespan=lifespan,
        title="lmtune",
        version="0.1.0",
        description="Self-hosted fine-tuning behind OpenAI's fine-tuning API. Authenticate with "
        "`Authorization: Bearer <key>` (`lmtune keys create NAME`). Errors have OpenAI's shape.",
        docs_url=None,
        redoc_url=None,  # /docs is served from local assets by service.web
    )
    app.state.settings = settings
    app.state.db = open_database(settings.database_url)
    app.state.reads = Reads(app.state.db)
    app.state.queue = CeleryJobQueue(settings)
    app.state.stream_slots = StreamSlots(settings.max_streams_per_key)
    install_error_handlers(app)
    routers = (files, jobs, checkpoints, exports, samples, models, inference, graders, evals, estimates, webhooks)
    for router in (*(module.router for module in routers), webhooks.types_router):
        app.include_router(router)
    install_web(app)
    install_openapi(app)

    app.state.upload_gate = UploadGate(settings.upload_validations)

    upload_limit = Limit(
        settings.max_upload_bytes + MULTIPART_OVERHEAD,
        f"the file is larger than the limit of {settings.max_upload_bytes:,} bytes",
        param="file",
        code="file_too_large",
    )
    json_limit = Limit(JSON_BODY_LIMIT, f"the request body is larger than the limit of {JSON_BODY_LIMIT:,} bytes")

    def body_limit(scope: Scope) -> Limit:
        return upload_limit if scope["method"] == "POST" and scope["path"] == "/v1/files" else json_limit

    app.add_middleware(BodyLimit, limit_for=body_limit)
    install_metrics(app, app.state.db, settings.metrics_token)  # it counts refusals too
    app.add_middleware(NoSniff)  # outermost: on every response, the body limit's 413 and /metrics included
    return app
