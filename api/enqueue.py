"""Publishing tasks by name from the API (it never imports `workers`).

Publishing is best-effort: the row is already committed, and the sweeper publishes anything that did not make
it. After a failed publish the API stops trying for `PUBLISH_BACKOFF_S`, so a Redis outage costs one slow
publish, not every request.

Fan-out requests are coalesced: `fanout(event_id)` hands the id to a publisher thread and returns at once; the
thread publishes ONE `fanout` message for every id that arrived within `FANOUT_LINGER_S` (up to
`FANOUT_MAX_IDS`). Under load a worker then fans out hundreds of events in a few statements and sends their
deliveries in large concurrent batches, instead of paying a Celery message, a task and several round trips per
event (bench/run.py measures the difference). An API process that dies before publishing loses only Redis
messages: its events are in PostgreSQL and the sweeper fans them out after `fanout_grace_s`.

The buffer between requests and the publisher thread is bounded (`fanout_buffer_max_ids`): while Redis is slow
the publisher falls behind, and an unbounded buffer would grow with every request until the process runs out
of memory. Beyond the bound an id is dropped (and counted): its event is committed, so the sweeper publishes it.
"""

from __future__ import annotations

import contextlib
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
# Long enough to gather a burst, short enough to be invisible next to a provider's 50-500 ms answer.
FANOUT_LINGER_S = 0.010
FANOUT_MAX_IDS = 500


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
        self._pending: queue.Queue[str | None] = queue.Queue(maxsize=settings.fanout_buffer_max_ids)
        self.dropped_ids = 0
        self._publisher = threading.Thread(target=self._publish_loop, name="fanout-publisher", daemon=True)
        self._publisher.start()

    def fanout(self, event_id: str) -> None:
        """Queue a fan-out for publishing; never blocks, on Redis or on a full buffer."""
        try:
            self._pending.put_nowait(event_id)
        except queue.Full:
            with self._lock:
                self.dropped_ids += 1
                first = self.dropped_ids == 1
            FANOUT_PUBLISH_DROPPED.inc()
            if first:
                log.warning("fan-out publish buffer full (Redis slow?); the sweeper fans out the rest")

    def pending_ids(self) -> int:
        """Ids waiting for the publisher thread (at most `fanout_buffer_max_ids`)."""
        return self._pending.qsize()

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
            batch = [first]
            deadline = time.monotonic() + FANOUT_LINGER_S
            stop = False
            while len(batch) < FANOUT_MAX_IDS:
                left = deadline - time.monotonic()
                try:
                    item = self._pending.get(timeout=left) if left > 0 else self._pending.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self.send(TASK_FANOUT, [batch])
            if stop:
                return

    def close(self) -> None:
        """Publish what is queued, then stop the publisher."""
        # If the publisher is stuck on Redis the buffer may stay full: what it holds is in PostgreSQL anyway.
        with contextlib.suppress(queue.Full):
            self._pending.put(None, timeout=5)
        self._publisher.join(timeout=5)
        self._app.close()
