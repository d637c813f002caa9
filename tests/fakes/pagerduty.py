"""A PagerDuty Events API v2 fake speaking reference/provider-protocols.md §7.

`POST <prefix>/v2/enqueue`: validates like PagerDuty (32-character routing key, event_action, a trigger's
payload with summary <= 1024, source and a known severity, dedup_key <= 255) and answers 202
`{"status": "success", "dedup_key": ...}` or 400 `{"status": "invalid event", "errors": [...]}`. It keeps alerts
per (routing key, dedup key), so a test can see a trigger and its resolve meet on one alert.
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.server import FakeServer, Recorded, Reply

SEVERITIES = {"critical", "error", "warning", "info"}


@dataclass
class Alert:
    routing_key: str
    dedup_key: str
    status: str  # triggered | acknowledged | resolved
    summary: str
    history: list[str] = field(default_factory=list)


def invalid(*errors: str) -> Reply:
    return Reply(
        400,
        json.dumps({"status": "invalid event", "message": "Event object is invalid", "errors": list(errors)}),
        content_type="application/json",
    )


def rate_limited(retry_after_s: int | None = None) -> Reply:
    headers = {"Retry-After": str(retry_after_s)} if retry_after_s is not None else {}
    return Reply(
        429,
        json.dumps({"status": "throttle event", "message": "Request Limit Exceeded"}),
        headers=headers,
        content_type="application/json",
    )


def problems(event: Any) -> list[str]:
    if not isinstance(event, dict):
        return ["Event object is not a JSON object"]
    errors: list[str] = []
    key = event.get("routing_key")
    if not isinstance(key, str) or len(key) != 32:
        errors.append("Length of 'routing_key' is incorrect (should be 32 characters)")
    action = event.get("event_action")
    if action not in ("trigger", "acknowledge", "resolve"):
        errors.append("'event_action' is invalid (must be one of: trigger, acknowledge, resolve)")
    dedup = event.get("dedup_key")
    if dedup is not None and (not isinstance(dedup, str) or len(dedup) > 255):
        errors.append("'dedup_key' must be a string of at most 255 characters")
    if action != "trigger" and dedup is None:
        errors.append("'dedup_key' is required for acknowledge and resolve events")
    if action == "trigger":
        payload = event.get("payload")
        if not isinstance(payload, dict):
            return [*errors, "'payload' is missing or invalid"]
        summary = payload.get("summary")
        if not isinstance(summary, str) or not summary or len(summary) > 1024:
            errors.append("'payload.summary' is missing or longer than 1024 characters")
        if not payload.get("source"):
            errors.append("'payload.source' is missing")
        if payload.get("severity") not in SEVERITIES:
            errors.append("'payload.severity' is invalid (must be one of: critical, error, warning, info)")
    return errors


class PagerDutyFake(FakeServer):
    def __init__(self) -> None:
        super().__init__(self._answer)
        self.alerts: list[Alert] = []
        self._state = threading.Lock()

    @staticmethod
    def enqueue_path(slot: str) -> str:
        return f"/{slot}/v2/enqueue"

    def events_url(self, slot: str) -> str:
        return self.url(self.enqueue_path(slot))

    def open_alert(self, routing_key: str, dedup_key: str) -> Alert | None:
        with self._state:
            for alert in reversed(self.alerts):
                if (alert.routing_key, alert.dedup_key) == (routing_key, dedup_key):
                    return alert if alert.status != "resolved" else None
        return None

    def alerts_for(self, dedup_key: str) -> list[Alert]:
        with self._state:
            return [a for a in self.alerts if a.dedup_key == dedup_key]

    def _answer(self, request: Recorded) -> Reply:
        if request.method != "POST" or not request.path.endswith("/v2/enqueue"):
            return Reply(404, b'{"status":"not found"}', content_type="application/json")
        try:
            event = json.loads(request.body)
        except ValueError:
            return invalid("Request body is not valid JSON")
        if errors := problems(event):
            return invalid(*errors)
        dedup = event.get("dedup_key") or uuid.uuid4().hex
        action = event["event_action"]
        alert = self.open_alert(event["routing_key"], dedup)
        with self._state:
            if action == "trigger" and alert is None:
                alert = Alert(event["routing_key"], dedup, "triggered", event["payload"]["summary"])
                self.alerts.append(alert)
            elif alert is not None and action == "acknowledge":
                alert.status = "acknowledged"
            elif alert is not None and action == "resolve":
                alert.status = "resolved"
            # Ack/resolve without an open alert is dropped by PagerDuty, still answered 202.
            if alert is not None:
                alert.history.append(action)
        return Reply(
            202,
            json.dumps({"status": "success", "message": "Event processed", "dedup_key": dedup}),
            content_type="application/json",
        )
