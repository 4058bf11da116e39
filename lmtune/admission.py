"""Fair admission of many keys' requests to a few places: `running` of them are served at once,
`waiting` more may wait, and beyond that a request is refused at once (the caller answers 429).
The model server admits completions with it, the API uploads.

No key holds more than its share, half of the running places and half of all places (rounded up),
so one key's flood never keeps another key out; a running place that frees goes to the waiting
request whose key runs the fewest, the earliest first. Everything here runs on one event loop.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from dataclasses import dataclass, field


class Refused(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def half(places: int) -> int:
    return max(1, -(-places // 2))


@dataclass(frozen=True)
class Wording:
    """How a refusal names the work and the place that does it."""

    work: str = "completions"
    place: str = "the model server"
    doing: str = "answering"


class Admission:
    def __init__(self, running: int, waiting: int, wording: Wording = Wording()):
        self.running, self.waiting, self.wording = running, waiting, wording
        self.key_running, self.key_places = half(running), half(running + waiting)
        self.held: Counter[str] = Counter()  # places (running and waiting) per key
        self.busy: Counter[str] = Counter()  # running places per key
        self._queue: list[Place] = []
        self._arrivals = itertools.count()

    @property
    def admitted(self) -> int:
        return sum(self.held.values())

    def admit(self, key: str) -> Place:
        """A place for one request of `key`, or Refused saying why."""
        said = self.wording
        if self.admitted >= self.running + self.waiting:
            raise Refused(
                f"{said.place} is busy: {self.running} {said.doing} and {self.waiting} waiting; try again shortly"
            )
        if self.held[key] >= self.key_places:
            raise Refused(
                f"this API key already has {self.held[key]} {said.work} under way, its share of "
                f"{said.place}'s {self.running + self.waiting} places; try again when one has ended"
            )
        self.held[key] += 1
        return Place(self, key, next(self._arrivals))

    def _dispatch(self) -> None:
        while sum(self.busy.values()) < self.running:
            # a place whose request was cancelled while waiting leaves the line when it is released
            ready = [p for p in self._queue if not p.granted.done() and self.busy[p.key] < self.key_running]
            if not ready:
                return
            chosen = min(ready, key=lambda p: (self.busy[p.key], p.arrival))
            self._queue.remove(chosen)
            self.busy[chosen.key] += 1
            chosen.granted.set_result(None)

    def _forget(self, counter: Counter[str], key: str) -> None:
        counter[key] -= 1
        if not counter[key]:
            del counter[key]


@dataclass(eq=False)
class Place:
    admission: Admission
    key: str
    arrival: int
    granted: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    released: bool = False

    async def run(self) -> None:
        """Until this request may run; cancelled by `abandon`."""
        if not self.granted.done():  # not abandoned already
            self.admission._queue.append(self)
            self.admission._dispatch()
        await self.granted

    def abandon(self) -> None:
        """The client went away: stop waiting (a running request stops at its next step)."""
        if self in self.admission._queue:
            self.admission._queue.remove(self)
        if not self.granted.done():
            self.granted.cancel()

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        admission = self.admission
        if self in admission._queue:
            admission._queue.remove(self)
        if self.granted.done() and not self.granted.cancelled():
            admission._forget(admission.busy, self.key)
        admission._forget(admission.held, self.key)
        admission._dispatch()
