"""Publishing tasks by name from the API (it never imports `workers`).

Publishing is best-effort: the event is already committed, and the sweeper publishes anything that did not
make it. After a failed publish the API stops trying for `PUBLISH_BACKOFF_S`, so a Redis outage costs one
slow request, not every request.
"""

from __future__ import annotations

import logging
import threading
import time

from celery import Celery

from shared.config import Settings
from shared.tasknames import TASK_FANOUT

log = logging.getLogger(__name__)

PUBLISH_BACKOFF_S = 5.0


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

    def fanout(self, event_id: str) -> bool:
        if time.monotonic() < self._skip_until:
            return False
        try:
            self._app.send_task(
                TASK_FANOUT, args=[event_id], queue=self._queue, routing_key=self._queue, exchange=""
            )
            return True
        except Exception as exc:
            with self._lock:
                self._skip_until = time.monotonic() + PUBLISH_BACKOFF_S
            log.warning(
                "could not publish fanout for %s (%s); the sweeper will", event_id, type(exc).__name__
            )
            return False

    def close(self) -> None:
        self._app.close()
