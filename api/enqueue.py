"""Publishing tasks by name from the API (it never imports `workers`).

Publishing is best-effort: the row is already committed, and the sweeper publishes anything that did not make
it. After a failed publish the API stops trying for `PUBLISH_BACKOFF_S`, so a Redis outage costs one slow
publish, not every request.

Fan-out requests are coalesced: `fanout(event_id)` stages the id on the event loop and returns at once; after a
linger (or at `FANOUT_MAX_IDS`) the loop hands the staged ids as ONE list to a publisher thread, which
publishes ONE `fanout` message for them. The linger adapts (`next_linger_s`): a lone event waits only
`fanout_linger_s` (10 ms), and while batches fill it grows with them up to `fanout_linger_max_s` (30 ms), so a
stream of events becomes fewer, larger fan-out tasks: every per-batch statement, message and commit is shared
by more events. In four pairs of bench/run.py's 50 ms phase, against a fixed 10 ms: worker 1.0-1.8 -> 0.8-1.1
ms per event, PostgreSQL 0.6-1.1 -> 0.7, delivered 374-636/s -> 562-621/s, idle latency unchanged (a fixed
10 ms linger is bistable: when the API falls behind, its windows hold fewer events, each costs more, and it
stays behind). Staging on the loop, not handing each id to the thread, matters for the API's CPU: a put on
a queue the thread waits on wakes it, and a thread switch (GIL hand-over) per accepted event
cost more than the publish (bench/api_accept.py). A caller without a running loop hands its id over directly
(published at once, uncoalesced). The staged list assumes one loop serves the app at a time, as EventStore does. Under load a worker then fans out hundreds of events in a few statements and sends their
deliveries in large concurrent batches, instead of paying a Celery message, a task and several round trips per
event (bench/run.py measures the difference). An API process that dies before publishing loses only Redis
messages: its events are in PostgreSQL and the sweeper fans them out after `fanout_grace_s`.

The buffer between requests and the publisher thread is bounded (`fanout_buffer_max_ids`): while Redis is slow
the publisher falls behind, and an unbounded buffer would grow with every request until the process runs out
of memory. Beyond the bound an id is dropped (and counted): its event is committed, so the sweeper publishes it.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from typing import Any

from celery import Celery

from shared.config import Settings
from shared.metrics import FANOUT_PUBLISH_DROPPED
from shared.tasknames import TASK_FANOUT

log = logging.getLogger(__name__)

PUBLISH_BACKOFF_S = 5.0
FANOUT_MAX_IDS = 500


def next_linger_s(previous_ids: int, since_previous_s: float, linger_s: float, linger_max_s: float) -> float:
    """How long the next staged batch lingers: `linger_s` per id the previous batch gathered, between
    `linger_s` and `linger_max_s`. A quiet spell (no hand-off for two longest lingers) starts again from
    `linger_s`, so a lone event after a burst does not wait as if the burst were still on."""
    if since_previous_s > 2 * linger_max_s:
        return linger_s
    return min(linger_max_s, max(linger_s, linger_s * previous_ids))


class Enqueuer:
    def __init__(self, settings: Settings) -> None:
        self._app = Celery("herald-api", set_as_current=False)
        self._app.conf.update(
            broker_url=settings.redis_url,
            broker_transport_options={"socket_timeout": 2, "socket_connect_timeout": 1},
            broker_connection_timeout=1,
            broker_connection_max_retries=0,
            task_publish_retry=False,
            task_serializer="json",
        )
        self._queue = settings.queue_name
        self._skip_until = 0.0
        self._lock = threading.Lock()
        # Lists of ids for the publisher thread; the bound is on ids (`_buffered_ids`), not on lists.
        self._pending: queue.Queue[list[str] | None] = queue.Queue()
        self._buffer_max_ids = settings.fanout_buffer_max_ids
        self._buffered_ids = 0
        # Ids staged on the loop that serves requests, handed over in one list per linger (next_linger_s).
        self._staged: list[str] = []
        self._linger_s = settings.fanout_linger_s
        self._linger_max_s = settings.fanout_linger_max_s
        self._previous_ids = 0
        self._previous_at = float("-inf")
        self._staged_loop: asyncio.AbstractEventLoop | None = None
        self.dropped_ids = 0
        self._publisher = threading.Thread(target=self._publish_loop, name="fanout-publisher", daemon=True)
        self._publisher.start()

    def fanout(self, event_id: str) -> None:
        """Queue a fan-out for publishing; never blocks, on Redis or on a full buffer."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._offer([event_id])
            return
        if loop is not self._staged_loop:
            # Another loop than the staged ids' (a test client's): theirs may never run its timer again.
            self._hand_off()
            self._staged_loop = loop
        if not self._staged:
            since_s = time.monotonic() - self._previous_at
            loop.call_later(
                next_linger_s(self._previous_ids, since_s, self._linger_s, self._linger_max_s), self._hand_off
            )
        self._staged.append(event_id)
        if len(self._staged) >= FANOUT_MAX_IDS:
            self._hand_off()  # the timer set above finds an empty list or a newer one: harmless either way

    def _hand_off(self) -> None:
        staged, self._staged = self._staged, []
        if staged:
            self._previous_ids, self._previous_at = len(staged), time.monotonic()
            self._offer(staged)

    def _offer(self, ids: list[str]) -> None:
        with self._lock:
            room = max(self._buffer_max_ids - self._buffered_ids, 0)
            taken = ids[:room]
            self._buffered_ids += len(taken)
            dropped = len(ids) - len(taken)
            first_drop = dropped > 0 and self.dropped_ids == 0
            self.dropped_ids += dropped
        if taken:
            self._pending.put_nowait(taken)
        if dropped:
            FANOUT_PUBLISH_DROPPED.inc(dropped)
            if first_drop:
                log.warning("fan-out publish buffer full (Redis slow?); the sweeper fans out the rest")

    def pending_ids(self) -> int:
        """Ids waiting for the publisher thread (at most `fanout_buffer_max_ids`), and those staged on the loop."""
        return self._buffered_ids + len(self._staged)

    def send(self, task_name: str, args: list[Any]) -> bool:
        """Publish one task by name on the main queue; False (logged) if Redis did not take it."""
        if time.monotonic() < self._skip_until:
            return False
        try:
            self._app.send_task(task_name, args=args, queue=self._queue, routing_key=self._queue, exchange="")
            return True
        except Exception as exc:
            with self._lock:
                self._skip_until = time.monotonic() + PUBLISH_BACKOFF_S
            log.warning("could not publish %s (%s); the sweeper will", task_name, type(exc).__name__)
            return False

    def _publish_loop(self) -> None:
        while True:
            first = self._pending.get()
            if first is None:
                return
            batch = first
            stop = False
            # Lists from the loop were gathered over a linger already: take what else is here, no waiting.
            while len(batch) < FANOUT_MAX_IDS:
                try:
                    item = self._pending.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch = batch + item
            with self._lock:
                self._buffered_ids -= len(batch)
            for start in range(0, len(batch), FANOUT_MAX_IDS):
                self.send(TASK_FANOUT, [batch[start : start + FANOUT_MAX_IDS]])
            if stop:
                return

    def close(self) -> None:
        """Publish what is queued, then stop the publisher."""
        self._hand_off()
        # If the publisher is stuck on Redis what it holds stays unpublished: it is in PostgreSQL anyway.
        self._pending.put(None)
        self._publisher.join(timeout=5)
        self._app.close()
