"""A lifecycle's current state after one dispatch (pure): how create, update, close, archive and delete
change an incident or a thing.

- `attrs` and `external_ids` are patches: a key set to null is deleted, a nested object is merged one level.
- The newest dispatch by `event_time` (incidents) or `observed_at` (things) sets the shown fields; an older
  one that arrives late ("stale") is recorded and numbered but changes neither the text nor the attributes,
  so an older state never overwrites a newer one. Terminal steps (close, archive, delete) always apply.
- Routing follows the lifecycle's peak severity, so the close of a critical incident reaches every
  destination its trigger reached even when the last update lowered the severity.
"""

from __future__ import annotations

from typing import Any

from api.gateway.validation import MAX_ATTR_KEYS, GatewayInvalid
from shared.events import GATEWAY_SEVERITIES

_RANK = {s: len(GATEWAY_SEVERITIES) - i for i, s in enumerate(GATEWAY_SEVERITIES)}


class LifecycleRefused(Exception):
    """The lifecycle cannot take this step (closed, archived, deleted): a 409 with its own code."""

    def __init__(self, error_code: str, message: str) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.message = message


def merge_patch(current: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    merged = dict(current)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict):
            base = merged.get(key)
            inner = dict(base) if isinstance(base, dict) else {}
            for k, v in value.items():
                if v is None:
                    inner.pop(k, None)
                else:
                    inner[k] = v
            merged[key] = inner
        else:
            merged[key] = value
    if len(merged) > MAX_ATTR_KEYS:
        raise GatewayInvalid("too_many_attrs", "attrs", f"attrs: at most {MAX_ATTR_KEYS} keys once merged")
    return merged


def new_state(kind: str) -> dict[str, Any]:
    return {
        "title": None,
        "description": None,
        "status": None,
        "message": None,
        "severity": None,
        "peak_severity": None,
        "state": "open" if kind == "incident" else "active",
        "open": True,
        "attrs": {},
        "tags": [],
        "images": [],
        "metadata": {},
        "external_ids": {},
        "primary_image": None,
        "location_type": None,
        "location_value": None,
        "started_at": None,
        "ended_at": None,
        "archived_at": None,
        "last_event_time": None,
    }


def _check_step(route: str, state: dict[str, Any]) -> None:
    current = state["state"]
    if route in ("/event/update", "/event/close") and current == "closed":
        if route == "/event/close":
            raise LifecycleRefused("event_already_closed", "this event is already closed")
        raise LifecycleRefused("event_closed", "this event is closed: it takes no more updates")
    if route.startswith("/thing/") and current == "deleted":
        raise LifecycleRefused("thing_deleted", "this thing is deleted")
    if route in ("/thing/update", "/thing/archive") and current == "archived":
        raise LifecycleRefused("thing_archived", "this thing is archived: only delete remains")


def apply(kind: str, route: str, state: dict[str, Any] | None, fields: dict[str, Any]) -> tuple[dict, bool]:  # type: ignore[type-arg]
    """(the state after this dispatch, whether the dispatch was stale)."""
    current = dict(state) if state is not None else new_state(kind)
    if state is not None:
        _check_step(route, current)
    when = float(fields["event_time"] if kind == "incident" else fields["observed_at"])
    last = current.get("last_event_time")
    stale = last is not None and when < float(last)
    terminal = route in ("/event/close", "/thing/archive", "/thing/delete")
    if not stale or terminal:
        for name in ("title", "status", "message", "severity", "primary_image", "location_type"):
            if name in fields:
                current[name] = fields[name]
        if "location_value" in fields:
            current["location_value"] = fields["location_value"]
        if "description" in fields:
            current["description"] = fields["description"]
        for name in ("tags", "images", "metadata"):
            if name in fields:
                current[name] = fields[name]
        if "attrs" in fields:
            current["attrs"] = merge_patch(current["attrs"], fields["attrs"])
        if "external_ids" in fields:
            current["external_ids"] = merge_patch(current["external_ids"], fields["external_ids"])
        current["last_event_time"] = when
    severity = fields.get("severity")
    if severity is not None:
        peak = current.get("peak_severity")
        if peak is None or _RANK[severity] > _RANK[peak]:
            current["peak_severity"] = severity
    if route == "/event/create":
        current["started_at"] = fields.get("started_at", when)
    elif route == "/thing/create":
        current["started_at"] = fields.get("created_at", when)
    elif route == "/event/close":
        current.update(state="closed", open=False, ended_at=fields.get("ended_at", when))
    elif route == "/thing/archive":
        current.update(state="archived", open=False, archived_at=when)
    elif route == "/thing/delete":
        current.update(state="deleted", open=False, ended_at=fields.get("deleted_at", when))
    return current, stale
