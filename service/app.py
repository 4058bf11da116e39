"""The FastAPI application: OpenAI's fine-tuning API on lmtune's store, under /v1."""

from __future__ import annotations

from fastapi import FastAPI, Request

from lmtune.dispatch import CeleryJobQueue
from lmtune.settings import Settings, load_settings
from lmtune.store.database import open_database
from service.errors import error_response, install_error_handlers
from service.routes import checkpoints, files, jobs, models

MULTIPART_OVERHEAD = 64 * 1024


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    app = FastAPI(
        title="lmtune",
        version="0.1.0",
        description="Self-hosted fine-tuning behind OpenAI's fine-tuning API. Authenticate with "
        "`Authorization: Bearer <key>` (`lmtune keys create NAME`). Errors have OpenAI's shape.",
    )
    app.state.settings = settings
    app.state.db = open_database(settings.database_url)
    app.state.queue = CeleryJobQueue(settings, app.state.db)
    install_error_handlers(app)
    for router in (files.router, jobs.router, checkpoints.router, models.router):
        app.include_router(router)

    @app.middleware("http")
    async def refuse_oversized_uploads(request: Request, call_next):
        # before the body is read: a declared size over the limit is refused and nothing is stored
        declared = request.headers.get("content-length", "")
        if request.method == "POST" and request.url.path == "/v1/files" and declared.isdigit() \
                and int(declared) > settings.max_upload_bytes + MULTIPART_OVERHEAD:  # fmt: skip
            return error_response(413, f"the upload is larger than the limit of {settings.max_upload_bytes} bytes",
                                  param="file", code="file_too_large")  # fmt: skip
        return await call_next(request)

    return app
