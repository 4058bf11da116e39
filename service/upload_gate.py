"""Bounded upload work: validation runs in worker threads, a few at a time, so the event loop and
the other requests stay fast while large files are checked."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import anyio

from lmtune.services import RequestError

T = TypeVar("T")
WAITING_PER_VALIDATION = 4  # uploads in progress (arriving, waiting, validating) per validation slot
RETRY_AFTER_SECONDS = 5


class UploadGate:
    """At most `validations` uploads are validated at once; others wait their turn. Past
    WAITING_PER_VALIDATION times that many uploads in progress, a new one is refused at once with
    429 and Retry-After, before its body is read."""

    def __init__(self, validations: int):
        self.limiter = anyio.CapacityLimiter(validations)
        self.capacity = validations * WAITING_PER_VALIDATION
        self.in_progress = 0  # only touched on the event loop, so a plain counter is enough

    @asynccontextmanager
    async def admit(self) -> AsyncIterator[None]:
        if self.in_progress >= self.capacity:
            raise RequestError(
                429,
                f"{self.in_progress} uploads are in progress, the most this server takes at once; retry shortly",
                code="too_many_uploads",
                retry_after=RETRY_AFTER_SECONDS,
            )
        self.in_progress += 1
        try:
            yield
        finally:
            self.in_progress -= 1

    async def run(self, function: Callable[..., T], *args) -> T:
        return await anyio.to_thread.run_sync(function, *args, limiter=self.limiter)
