"""API metrics: request latency and event submissions (middleware), and `/metrics` with the system-state
gauges (queue depth and age, outbox backlog, dead letters, circuits) read from Redis and PostgreSQL at scrape time.

The API runs one process per pod (scale with replicas), so the default registry is enough here; the state
gauges are global, so dashboards aggregate them with max() across API replicas.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import redis
from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import metrics
from shared.config import Settings
from shared.tasknames import sweep_queue

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])

# kombu's Redis transport splits a queue into priority sub-lists named queue + "\x06\x16" + step.
_PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")
_EVENT_ROUTES = {"/v1/events/release": "release", "/v1/events/pipeline": "pipeline"}


class MetricsMiddleware:
    """Times every request by route template; counts event submissions by type and status code."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status_code = 500

        async def capture(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            metrics.API_REQUEST_DURATION.labels(template, scope["method"], str(status_code)).observe(
                time.perf_counter() - started
            )
            if scope["method"] == "POST" and (kind := _EVENT_ROUTES.get(scope["path"])):
                metrics.EVENTS_ACCEPTED.labels(kind, str(status_code)).inc()


@dataclass
class SystemState:
    """The last values the state gauges were set to: what the console's health header shows (api/console)."""

    queue_depth: int = 0
    oldest_pending_age_s: float = 0.0
    dead_letters: int = 0
    failing_integrations: int = 0
    #: False when the last read of PostgreSQL or Redis failed (the values are then older ones)
    fresh: bool = True


class StateGauges:
    """Refreshes the system-state gauges at most every `metrics_state_ttl_s`; a failed read keeps old values."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._refreshed_at = 0.0
        self._redis = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=1, socket_timeout=1)
        self.state = SystemState()

    def snapshot(self, sessions: Any) -> SystemState:
        """The system state for the console's header, from the same reads (and the same TTL) as /metrics."""
        self.refresh(sessions)
        return self.state

    def refresh(self, sessions: Any) -> None:
        with self._lock:
            if time.monotonic() - self._refreshed_at < self._settings.metrics_state_ttl_s:
                return
            self._refreshed_at = time.monotonic()
        self.state.fresh = True
        try:
            self._from_postgres(sessions)
        except Exception as exc:
            self.state.fresh = False
            log.warning("metrics: PostgreSQL state unavailable (%s)", type(exc).__name__)
        try:
            self._from_redis()
        except Exception as exc:
            self.state.fresh = False
            log.warning("metrics: Redis state unavailable (%s)", type(exc).__name__)

    def _from_postgres(self, sessions: Any) -> None:
        with sessions() as session:
            outbox = session.execute(
                text(
                    "SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0) "
                    "FROM event WHERE fanned_out_at IS NULL"
                )
            ).one()
            queued_age = session.execute(
                text(
                    "SELECT COALESCE(EXTRACT(EPOCH FROM now() - min(queued_at)), 0) FROM delivery "
                    "WHERE state IN ('pending', 'retrying') AND queued_at IS NOT NULL"
                )
            ).scalar_one()
            states = dict(
                session.execute(
                    text(
                        "SELECT state, count(*) FROM delivery WHERE state IN ('pending', 'sending', 'retrying', "
                        "'waiting') GROUP BY state"
                    )
                ).all()
            )
            dead = session.execute(
                text(
                    "SELECT i.provider, count(*) FROM delivery d JOIN integration i ON i.id = d.integration_id "
                    "WHERE d.state = 'dead' GROUP BY i.provider"
                )
            ).all()
            failing = session.execute(
                text("SELECT count(*) FROM integration WHERE failing AND enabled")
            ).scalar_one()
            circuits = dict(
                session.execute(
                    text(
                        "SELECT circuit_state, count(*) FROM integration WHERE enabled GROUP BY circuit_state"
                    )
                ).all()
            )
        for state in ("closed", "open", "half_open"):
            metrics.CIRCUITS.labels(state).set(circuits.get(state, 0))
        metrics.OUTBOX_BACKLOG.set(outbox[0])
        metrics.INTEGRATIONS_FAILING.set(failing)
        metrics.OUTBOX_OLDEST_AGE.set(float(outbox[1]))
        metrics.QUEUE_OLDEST_AGE.set(float(queued_age))
        for state in ("pending", "sending", "retrying", "waiting"):
            metrics.DELIVERIES_BY_STATE.labels(state).set(states.get(state, 0))
        metrics.DEAD_LETTERS.clear()
        for provider, count in dead:
            metrics.DEAD_LETTERS.labels(provider).set(count)
        self.state.oldest_pending_age_s = float(queued_age)
        self.state.dead_letters = sum(count for _, count in dead)
        self.state.failing_integrations = int(failing)

    def _from_redis(self) -> None:
        for queue in (self._settings.queue_name, sweep_queue(self._settings.queue_name)):
            pipe = self._redis.pipeline()
            for suffix in _PRIORITY_SUFFIXES:
                pipe.llen(queue + suffix)
            depth = sum(pipe.execute())
            metrics.QUEUE_DEPTH.labels(queue).set(depth)
            if queue == self._settings.queue_name:
                self.state.queue_depth = depth


@router.get("/metrics", include_in_schema=False)
def metrics_endpoint(request: Request) -> Response:
    request.app.state.state_gauges.refresh(request.app.state.sessions)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
