"""PagerDuty Events API v2 bodies: trigger with a payload, acknowledge and resolve with the dedup key only.

Limits (reference/provider-protocols.md §7): summary 1024, dedup_key 255, whole body 512 KB (custom details are
kept well under that).
"""

from __future__ import annotations

import hashlib
from typing import Any

from providers.render.common import TRUNCATION_MARKER, truncate
from shared.rendering import RenderedMessage

MAX_SUMMARY_CHARS = 1024
MAX_DEDUP_KEY_CHARS = 255
MAX_SOURCE_CHARS = 255
MAX_DETAIL_TEXT_CHARS = 16000
# Custom details stay far below the 512 KB body limit: an alert is read by a person, not parsed.
MAX_DETAIL_FIELDS = 100
MAX_DETAIL_NAME_CHARS = 200
MAX_DETAIL_VALUE_CHARS = 2000
MAX_DETAILS_CHARS = 64_000

#: our severities -> PagerDuty's (the same four names today; unknown ones page as errors rather than vanish)
SEVERITY_MAP = {"info": "info", "warning": "warning", "error": "error", "critical": "critical"}
ACTIONS = ("trigger", "acknowledge", "resolve")


def dedup_key(message: RenderedMessage) -> str:
    """Stable per lifecycle, so a trigger and its resolve meet on one alert; per event when there is none."""
    key = message.lifecycle_key or f"herald:{message.data.get('event_id', message.title)}"
    if len(key) <= MAX_DEDUP_KEY_CHARS:
        return key
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def render(
    message: RenderedMessage, *, routing_key: str, action: str, source: str | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": dedup_key(message),
    }
    if action != "trigger":
        return body
    data = message.data
    details: dict[str, Any] = {}
    budget_chars = MAX_DETAILS_CHARS
    for index, (name, value) in enumerate(message.fields):
        entry = (truncate(name, MAX_DETAIL_NAME_CHARS), truncate(value, MAX_DETAIL_VALUE_CHARS))
        budget_chars -= len(entry[0]) + len(entry[1])
        if index >= MAX_DETAIL_FIELDS or budget_chars < 0:
            details[TRUNCATION_MARKER] = f"{len(message.fields) - index} more field(s) not shown"
            break
        details[entry[0]] = entry[1]
    if message.text:
        details["text"] = truncate(message.text, MAX_DETAIL_TEXT_CHARS)
    details["event_type"] = message.event_type
    if "event_id" in data:
        details["event_id"] = data["event_id"]
    payload: dict[str, Any] = {
        "summary": truncate(message.title, MAX_SUMMARY_CHARS),
        "source": truncate(source or f"herald/{data.get('project') or 'unknown'}", MAX_SOURCE_CHARS),
        "severity": SEVERITY_MAP.get(message.severity, "error"),
        "class": message.event_type,
        "custom_details": details,
    }
    if data.get("created_at"):
        payload["timestamp"] = data["created_at"]
    if component := data.get("app") or data.get("project"):
        payload["component"] = str(component)
    if data.get("environment"):
        payload["group"] = str(data["environment"])
    body["payload"] = payload
    body["client"] = "Herald"
    if message.link:
        body["links"] = [{"href": message.link, "text": "View details"}]
    return body
