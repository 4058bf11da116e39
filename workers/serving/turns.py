"""Taking turns on one model: answers generated at once each run one step (a token) and then let
the next one in line run its step, so a long answer never makes a short one wait for its end."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager


class Turns:
    """A lock handed on in arrival order (Python's own lock is not fair)."""

    def __init__(self):
        self._changed = threading.Condition()
        self._line: deque[Turn] = deque()  # the first one holds the model

    @contextmanager
    def turn(self) -> Iterator[Turn]:
        turn = Turn(self)
        turn.take()
        try:
            yield turn
        finally:
            turn.give()


class Turn:
    def __init__(self, turns: Turns):
        self.turns = turns

    def take(self) -> None:
        with self.turns._changed:
            self.turns._line.append(self)
            self.turns._changed.wait_for(lambda: self.turns._line[0] is self)

    def give(self) -> None:
        with self.turns._changed:
            self.turns._line.remove(self)
            self.turns._changed.notify_all()

    def pass_on(self) -> bool:
        """Let the others in line have their step first, if any wait; whether any did."""
        with self.turns._changed:
            if len(self.turns._line) == 1:
                return False
        self.give()
        self.take()
        return True
