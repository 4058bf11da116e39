"""Request dependencies: one per wired thing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from lmtune.dispatch import JobQueue
from lmtune.errors import RequestError
from lmtune.settings import Settings
from lmtune.store.database import Database
from lmtune.store.keys import authenticate, authenticate_for_job
from lmtune.store.models import Job
from service.errors import not_found
from service.inference_client import InferenceClient
from service.webhook_sender import WebhookSender

T = TypeVar("T")

# The dependencies are `async def` so that FastAPI calls them on the event loop: a plain `def` is
# sent to the thread pool, one thread hop each, which cost more than the work of a whole request.


class Reads:
    """Makes the API's reads of the key, the owned job and the hot routes' pages.

    On SQLite they run on the event loop: a read there is a local call into the page cache that never
    waits for a writer (WAL) and is Python's work almost all through, so a thread would not free the
    loop for it: the GIL passed back and forth instead (a request switched threads 4-8 times), which
    cost a third or more of the API's CPU a request (docs/benchmarks.md). On PostgreSQL a read waits
    on the network, so it goes to Starlette's thread pool, and only the read does: the route makes its
    answer's body back on the loop, as Python's work in the thread passed the GIL to and fro
    (`/v1/models` on PostgreSQL: 1.68 ms of API CPU a request with its body made in the thread, 1.38
    after)."""

    def __init__(self, db: Database):
        self.db = db
        self._on_loop = db.engine.dialect.name == "sqlite"

    async def run(self, read: Callable[..., T], *args, **kwargs) -> T:
        return read(*args, **kwargs) if self._on_loop else await run_in_threadpool(read, *args, **kwargs)


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_db(request: Request) -> Database:
    return request.app.state.db


async def get_reads(request: Request) -> Reads:
    return request.app.state.reads


async def get_queue(request: Request) -> JobQueue:
    return request.app.state.queue


async def get_inference(request: Request) -> InferenceClient:
    return request.app.state.inference  # made and closed by the app's lifespan (service/app.py)


async def get_webhook_sender(request: Request) -> WebhookSender:
    return request.app.state.webhook_sender  # made and closed by the app's lifespan


# declares the scheme in /openapi.json (and the Authorize button of /docs); errors stay OpenAI's
bearer = HTTPBearer(auto_error=False, description="An API key from `lmtune keys create NAME`")


CredentialsDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def _presented(credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None:
        raise RequestError(
            401,
            "missing API key: send `Authorization: Bearer <key>` (create one with `lmtune keys create NAME`)",
            code="missing_api_key",
        )
    return credentials.credentials.strip()


def _owner(db: Database, secret: str) -> str:
    # looked up on every request, so a revoked key is refused at once
    return known_key(authenticate(db, secret))


def known_key(owner: str | None) -> str:
    """The key id a read found for the presented key; 401 if it found none."""
    if owner is None:
        raise RequestError(401, "invalid API key", code="invalid_api_key")
    return owner


async def get_owner(credentials: CredentialsDep, reads: Annotated[Reads, Depends(get_reads)]) -> str:
    """The caller's API key id, from `Authorization: Bearer <key>` (a read: see `Reads`)."""
    return await reads.run(_owner, reads.db, _presented(credentials))


async def get_presented_key(credentials: CredentialsDep) -> str:
    """The key the caller presents (401 if none), not looked up yet: for a route whose read looks it up
    with what it reads (lmtune.store.key_reads), one statement and one trip to the thread pool."""
    return _presented(credentials)


SettingsDep = Annotated[Settings, Depends(get_settings)]
DbDep = Annotated[Database, Depends(get_db)]
ReadsDep = Annotated[Reads, Depends(get_reads)]
OwnerDep = Annotated[str, Depends(get_owner)]
PresentedKey = Annotated[str, Depends(get_presented_key)]
QueueDep = Annotated[JobQueue, Depends(get_queue)]
InferenceDep = Annotated[InferenceClient, Depends(get_inference)]
WebhookSenderDep = Annotated[WebhookSender, Depends(get_webhook_sender)]


async def get_owned_job(job_id: str, credentials: CredentialsDep, reads: ReadsDep) -> Job:
    """The job of the path's `job_id` if it is the caller's; else 404, as for a job that does not exist.
    The key and the job are read together (`Reads`), so a route that needs nothing else can be
    `async def` and make no read of its own."""
    return await reads.run(owned_job, reads.db, _presented(credentials), job_id)


def owned_job(db: Database, secret: str, job_id: str) -> Job:
    """The job of `job_id` if the key `secret` owns it, by one query (a read: see `Reads`); else 401
    for an unknown key, 404 for another key's job as for none."""
    owner, job = authenticate_for_job(db, secret, job_id)
    known_key(owner)
    if job is None:
        raise not_found("fine-tuning job", job_id)
    return job


OwnedJob = Annotated[Job, Depends(get_owned_job)]
