"""Request dependencies: one per wired thing."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from lmtune.dispatch import JobQueue
from lmtune.errors import RequestError
from lmtune.settings import Settings
from lmtune.store.database import Database
from lmtune.store.keys import authenticate


# The dependencies are `async def` so that FastAPI calls them on the event loop: a plain `def` is
# sent to the thread pool, one thread hop each, which cost more than the work of a whole request.


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_db(request: Request) -> Database:
    return request.app.state.db


async def get_queue(request: Request) -> JobQueue:
    return request.app.state.queue


class KeyCache:
    """Recently authenticated secrets, kept `ttl` seconds: a client polling a job makes one key
    lookup (a database query) every few seconds, not one per request. A removed key is refused
    after at most `ttl` seconds. Used on the event loop only, so it needs no lock."""

    def __init__(self, ttl: float = 5.0, max_entries: int = 10_000):
        self.ttl, self.max_entries = ttl, max_entries
        self._owners: dict[str, tuple[str, float]] = {}

    async def owner(self, db: Database, secret: str) -> str | None:
        moment = time.monotonic()
        cached = self._owners.get(secret)
        if cached is not None and cached[1] > moment:
            return cached[0]
        owner = await run_in_threadpool(authenticate, db, secret)
        if owner is not None:
            if len(self._owners) >= self.max_entries:  # bounded: forget them all, they come back
                self._owners.clear()
            self._owners[secret] = (owner, moment + self.ttl)
        return owner


# declares the scheme in /openapi.json (and the Authorize button of /docs); errors stay OpenAI's
bearer = HTTPBearer(auto_error=False, description="An API key from `lmtune keys create NAME`")


async def get_owner(request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
                    db: Annotated[Database, Depends(get_db)]) -> str:  # fmt: skip
    """The caller's API key id, from `Authorization: Bearer <key>`."""
    if credentials is None:
        raise RequestError(401, "missing API key: send `Authorization: Bearer <key>` (create one with `lmtune keys create NAME`)",
                           code="missing_api_key")  # fmt: skip
    owner = await request.app.state.keys.owner(db, credentials.credentials.strip())
    if owner is None:
        raise RequestError(401, "invalid API key", code="invalid_api_key")
    return owner


SettingsDep = Annotated[Settings, Depends(get_settings)]
DbDep = Annotated[Database, Depends(get_db)]
OwnerDep = Annotated[str, Depends(get_owner)]
QueueDep = Annotated[JobQueue, Depends(get_queue)]
