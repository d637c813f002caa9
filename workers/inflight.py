"""The sends one worker process holds: a counting gate (backpressure for `deliver` tasks, fan-out's own room)
with the latest instant any of them may end (what a warm shutdown waits for)."""

from __future__ import annotations

import threading
import time


class Inflight:
    """The sends one process holds: a counting gate with the latest instant any of them may end."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(capacity, 1)
        self._n = 0
        self._ends_by = 0.0  # time.monotonic() by which every current send has ended
        self._cond = threading.Condition()

    def acquire(self, n: int, *, block: bool) -> bool:
        """Take room for n sends; a batch larger than the capacity still goes alone (never a deadlock)."""
        with self._cond:
            while self._n > 0 and self._n + n > self.capacity:
                if not block:
                    return False
                self._cond.wait()
            self._n += n
            return True

    def extend(self, ends_by: float) -> None:
        with self._cond:
            self._ends_by = max(self._ends_by, ends_by)

    def release(self, n: int) -> None:
        with self._cond:
            self._n -= n
            self._cond.notify_all()

    @property
    def count(self) -> int:
        return self._n

    def wait_idle(self) -> bool:
        """Wait until nothing is in flight, at most until the latest deadline; True when idle."""
        with self._cond:
            return self._cond.wait_for(lambda: self._n == 0, max(self._ends_by - time.monotonic(), 0.0))
