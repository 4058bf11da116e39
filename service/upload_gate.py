"""Bounded upload work, shared fairly between keys: validation runs in worker threads, a few at a
time, so the event loop and the other requests stay fast while large files are checked; no key holds
more than its share of the places (lmtune.admission), so one key's trickled uploads never keep
another key's out."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import anyio

from lmtune.admission import Admission, Place, Refused, Wording
from lmtune.services import RequestError

T = TypeVar("T")
WAITING_PER_VALIDATION = 4  # uploads in progress (arriving, waiting, validating) per validation slot
RETRY_AFTER_SECONDS = 5


class UploadGate:
    """At most `validations` uploads are validated at once (half of them, rounded up, of one key);
    others wait their turn, the key validating the fewest first. Past WAITING_PER_VALIDATION times
    that many uploads in progress, or past half of them for one key, a new one is refused at once
    with 429 and Retry-After, before its body is read."""

    def __init__(self, validations: int):
        self.admission = Admission(
            validations,
            validations * (WAITING_PER_VALIDATION - 1),
            Wording(work="uploads", place="this server's upload validation", doing="validating"),
        )

    @asynccontextmanager
    async def admit(self, key: str) -> AsyncIterator[Place]:
        try:
            place = self.admission.admit(key)
        except Refused as refused:
            raise RequestError(429, refused.message, code="too_many_uploads", retry_after=RETRY_AFTER_SECONDS) from None
        try:
            yield place
        finally:
            place.release()

    async def run(self, place: Place, function: Callable[..., T], *args) -> T:
        """`function(*args)` in a thread once `place` has its turn to validate."""
        await place.run()
        return await anyio.to_thread.run_sync(function, *args)
