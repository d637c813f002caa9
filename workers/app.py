"""The Celery application and every broker/worker setting, each with the reason it has that value.

Durability does not rest on Redis: PostgreSQL holds every event and delivery with its state and due time, and
the sweeper (beat, every `sweep_interval_s`) re-publishes whatever Redis lost. The settings below therefore
optimise for fast recovery and no redelivery loops, not for Redis-side guarantees.
"""

from __future__ import annotations

import importlib
from typing import Any

from celery import Celery, bootsteps
from kombu import Exchange, Queue

from shared.config import Settings, get_settings
from shared.tasknames import TASK_DELIVER, TASK_FANOUT, TASK_RETENTION, TASK_SWEEP, sweep_queue

# A visibility timeout well above the longest task (a task claims its rows and hands the sends to the event loop,
# waiting at most for room under inflight_sends_per_process) so a running task is never redelivered, yet short
# enough that a SIGKILLed worker's unacked messages come back in minutes, not the default hour
# (celery-redis-notes.md section 1). The sweeper usually recovers sooner anyway: the claimed rows carry a lease.
VISIBILITY_TIMEOUT_S = 300

# How often the consumer's event loop wakes up at the least (see ConsumeTick).
CONSUME_TICK_S = 0.1

TASK_MODULES = (
    "workers.signals",
    "workers.metrics_server",
    "workers.tasks.fanout",
    "workers.tasks.deliver",
    "workers.tasks.sweep",
    "workers.tasks.redrive",
    "workers.tasks.retention",
)


def celery_config(settings: Settings) -> dict[str, Any]:
    queue = settings.queue_name
    # Publish through the default (nameless) exchange: kombu's Redis transport then routes by queue name
    # alone and needs no `_kombu.binding.*` key, so a FLUSHALL cannot leave publishers unable to route.
    default_exchange = Exchange("", type="direct")
    return {
        "broker_url": settings.redis_url,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            "visibility_timeout": VISIBILITY_TIMEOUT_S,
            "socket_timeout": 5,
            "socket_connect_timeout": 3,
        },
        "task_queues": [
            Queue(queue, exchange=default_exchange, routing_key=queue),
            Queue(sweep_queue(queue), exchange=default_exchange, routing_key=sweep_queue(queue)),
        ],
        "task_default_queue": queue,
        "task_default_exchange": "",
        "task_default_routing_key": queue,
        "task_routes": {
            TASK_SWEEP: {"queue": sweep_queue(queue), "routing_key": sweep_queue(queue), "exchange": ""},
            TASK_FANOUT: {"queue": queue, "routing_key": queue, "exchange": ""},
            TASK_DELIVER: {"queue": queue, "routing_key": queue, "exchange": ""},
        },
        # No result backend: outcomes live in PostgreSQL, and results would only cost Redis round trips.
        "task_ignore_result": True,
        "result_backend": None,
        "task_serializer": "json",
        "accept_content": ["json"],
        # Ack after the task ran, so a worker that dies holding a message gives it back (after the
        # visibility timeout, or at once on a clean shutdown). Tasks are idempotent: deliver claims rows with a
        # conditional UPDATE, fanout inserts ON CONFLICT DO NOTHING.
        "task_acks_late": True,
        # Deliberately off: a child killed mid-batch (OOM, SIGKILL) would otherwise requeue the same message
        # and could loop on a poison batch. Its claimed deliveries carry a lease in PostgreSQL instead, and the
        # sweeper returns them to `retrying` when the lease runs out.
        "task_reject_on_worker_lost": False,
        # Threads, not prefork: a task's sends run on the process's shared event loop (workers/runtime.py), so
        # a thread per in-flight batch is all a task needs, and `worker_concurrency` batches are sent at once
        # through one HTTP client. Sending is I/O-bound; one process uses about one core, so scale out with
        # processes/replicas (bench/run.py measured this choice against prefork, see the README).
        "worker_pool": "threads",
        "worker_concurrency": settings.worker_concurrency,
        # A deliver task is a whole batch of concurrent sends; taking one message per process at a time keeps
        # the backlog visible in Redis (for KEDA and metrics) and means a shutdown has little to hand back.
        "worker_prefetch_multiplier": 1,
        # Warm shutdown on SIGTERM: Celery restores what it has not started, and workers/dispatch.py waits for
        # the sends already handed to the loop (bounded by their deadlines); with nothing running, at once.
        "worker_enable_soft_shutdown_on_idle": True,
        "worker_soft_shutdown_timeout": 0.0,
        "worker_send_task_events": False,
        "task_send_sent_event": False,
        # Publishing must fail fast when Redis is down: the row is already in PostgreSQL and the sweeper will
        # publish it later; an API request must not hang on the broker.
        "task_publish_retry": True,
        "task_publish_retry_policy": {
            "max_retries": 1,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.2,
        },
        "beat_schedule": {
            "sweep": {
                "task": TASK_SWEEP,
                "schedule": settings.sweep_interval_s,
                # A sweep that waited longer than a few intervals is stale; the next one does the same work.
                "options": {"expires": max(5.0, settings.sweep_interval_s * 5)},
            },
            "retention": {
                "task": TASK_RETENTION,
                "schedule": settings.retention_interval_s,
                "options": {"expires": settings.retention_interval_s},
            },
        },
        "worker_hijack_root_logger": False,
    }


def _tick() -> None:
    """Nothing: the timer entry exists only to wake the event loop."""


class ConsumeTick(bootsteps.StartStopStep):
    """Wakes the consumer's event loop every CONSUME_TICK_S, so a freed pool slot is refilled at once.

    On Redis the consumer issues BRPOP only while the prefetch window has room (kombu `on_poll_start` checks
    `qos.can_consume()`). With every thread busy it stops polling, and a task finishing in a pool thread does
    not wake the loop: the loop sleeps in poll() until its next timer, up to 10 s (kombu Hub.fire_timers
    max_delay). Measured before this step: the one-thread sweep consumer ran a 2 s sweep, then sat idle for
    about 8 s while beat's sweeps piled up in Redis and expired unconsumed ("Discarding revoked task"), and
    a busy delivery worker drained its queue in bursts 10 s apart. A repeating no-op entry bounds that wait.
    """

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._entry: Any = None

    def start(self, parent: Any) -> None:
        self.stop(parent)
        self._entry = parent.timer.call_repeatedly(CONSUME_TICK_S, _tick)

    def stop(self, parent: Any) -> None:
        if self._entry is not None:
            self._entry.cancel()
            self._entry = None

    def shutdown(self, parent: Any) -> None:
        self.stop(parent)


def create_app(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    # The same start-up refusals as the API's (dev keys in production, duplicate encryption key ids).
    settings.check_production()
    app = Celery("herald", set_as_current=True)
    app.conf.update(celery_config(settings))
    app.steps["consumer"].add(ConsumeTick)
    # Importing the task modules registers their @shared_task functions with this app.
    for module in TASK_MODULES:
        importlib.import_module(module)
    return app


app = create_app()
