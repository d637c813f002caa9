"""Held for their slot: deliveries whose destination has room again in a few seconds, woken by this process's timer.

Why: a delivery that waits for its rate slot used to go to `waiting` and came back only on the sweeper's next
run, so each destination moved about one delivery per sweep (a burst to 20 destinations at 5/s drained at a third
of the sum of their limits). A wait of at most `pacing_hold_max_s` is held here instead: its row stays
`pending`/`retrying`, due at its slot and marked as published until then (shared/deliveries.py `hold`), and a
timer on the process's loop claims it at its slot, so a burst drains at the destination's own rate.

Nothing is lost with the process: the row is in PostgreSQL, and the sweeper republishes it `requeue_after_s` after
its slot (the queued_at the hold stamped). Timers are grouped in buckets of `BUCKET_S`, so a burst costs one
timer per bucket, not one per delivery; a bucket fires at its end, never before a slot in it.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
import uuid
from collections.abc import Callable, Mapping

from shared import metrics

# How late past its slot a held delivery may be woken. Lateness adds up: the limiter spaces a send from the last
# one that really went (workers/pacing.py), so a coarse bucket would lower a destination's rate by up to
# BUCKET_S per send (10 ms of a 200 ms interval at 5/s).
BUCKET_S = 0.01


class Wakeups:
    """One per worker process: buckets of held delivery ids by the time their slot comes, each with one timer."""

    def __init__(self, loop: asyncio.AbstractEventLoop, wake: Callable[[list[uuid.UUID]], None]) -> None:
        self._loop = loop
        self._wake = wake  # called on the loop with the ids whose slot has come; must not block
        self._buckets: dict[int, list[uuid.UUID]] = {}
        self._lock = threading.Lock()

    def hold(self, wait_s: Mapping[uuid.UUID, float]) -> None:
        """Wake each delivery `wait_s[id]` from now (from any thread)."""
        now_s = time.monotonic()
        new: list[int] = []
        with self._lock:
            for delivery_id, wait in wait_s.items():
                bucket = math.ceil((now_s + max(wait, 0.0)) / BUCKET_S)
                ids = self._buckets.get(bucket)
                if ids is None:
                    self._buckets[bucket] = ids = []
                    new.append(bucket)
                ids.append(delivery_id)
        metrics.PACED_HELD.inc(len(wait_s))
        for bucket in new:
            self._loop.call_soon_threadsafe(self._arm, bucket)

    def _arm(self, bucket: int) -> None:
        self._loop.call_later(max(bucket * BUCKET_S - time.monotonic(), 0.0), self._fire, bucket)

    def _fire(self, bucket: int) -> None:
        with self._lock:
            ids = self._buckets.pop(bucket, [])
        metrics.PACED_HELD.dec(len(ids))
        if ids:
            self._wake(ids)

    @property
    def held_count(self) -> int:
        with self._lock:
            return sum(len(ids) for ids in self._buckets.values())

    def drain(self) -> list[uuid.UUID]:
        """Take every held id (a warm shutdown hands them back to the sweeper at once)."""
        with self._lock:
            out = [i for ids in self._buckets.values() for i in ids]
            self._buckets.clear()
        metrics.PACED_HELD.dec(len(out))
        return out
