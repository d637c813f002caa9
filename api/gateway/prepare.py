"""What one accepted gateway call writes, computed before any statement (pure, no I/O): the event row's payload
and values, the answer, and for an incident or a thing the lifecycle's state after the call.

api/gateway/store.py turns a `Prepared` into statements (one for a create, two in a transaction for a step).
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from psycopg.types.json import Jsonb

from api.gateway.state import apply
from shared.channels import ChannelRow
from shared.events import (
    GATEWAY_TO_ROUTE_SEVERITY,
    MAX_PUSH_TTL_S,
    incident_lifecycle_key,
    message_lifecycle_key,
    thing_lifecycle_key,
)

KIND_OF_ROUTE = {
    "/message": "message",
    "/event/create": "incident",
    "/event/update": "incident",
    "/event/close": "incident",
    "/thing/create": "thing",
    "/thing/update": "thing",
    "/thing/archive": "thing",
    "/thing/delete": "thing",
}
EVENT_TYPE_OF_ROUTE = {
    "/message": "message.sent",
    "/event/create": "incident.created",
    "/event/update": "incident.updated",
    "/event/close": "incident.resolved",
    "/thing/create": "thing.created",
    "/thing/update": "thing.updated",
    "/thing/archive": "thing.archived",
    "/thing/delete": "thing.deleted",
}
_DISPATCH_EXCLUDE = ("channel_id", "password", "op_id", "ciphertext")


def json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


def timestamp(seconds: float | None) -> datetime | None:
    return datetime.fromtimestamp(seconds, UTC) if seconds is not None else None


@dataclass(frozen=True)
class Prepared:
    """What one accepted call writes, computed before any statement: the event, the answer, the lifecycle."""

    payload: dict[str, Any]
    data: dict[str, Any]
    severity: str  # the event row's, on the route scale
    key: str  # the lifecycle key
    when: float  # the dispatch's event time
    lifecycle_id: uuid.UUID | None = None  # None for a message
    sequence: int = 1
    #: the gateway_lifecycle columns (state after this call); None for a message
    columns: dict[str, Any] | None = None


def payload_of(route: str, channel: ChannelRow, op_id: str, fields: dict[str, Any]) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "project": channel.project,
        "channel_id": channel.channel_id,
        "op_id": op_id,
        "route": route,
        "dispatch": {k: v for k, v in fields.items() if k not in _DISPATCH_EXCLUDE},
    }
    if "ciphertext" in fields:
        # Opaque to Herald: stored and handed to destinations as is, never decrypted or logged.
        payload["ciphertext"] = fields["ciphertext"]
    return payload


def prepare_message(route: str, channel: ChannelRow, op_id: str, fields: dict[str, Any]) -> Prepared:
    message_id = uuid.uuid4().hex
    key = message_lifecycle_key(channel.channel_id, message_id)
    when = fields.get("occurred_at") or datetime.now(UTC).timestamp()
    payload = payload_of(route, channel, op_id, fields)
    payload["message_id"] = message_id
    if "thing_id" in fields:
        payload["thing_id"] = fields["thing_id"]
    payload["lifecycle"] = {
        "kind": "message",
        "id": message_id,
        "key": key,
        "sequence": 1,
        "event_time": when,
        "stale": False,
    }
    if "ttl" in fields:
        now_s = datetime.now(UTC).timestamp()
        payload["ttl_s"] = int(max(0, min(fields["ttl"] - now_s, MAX_PUSH_TTL_S)))
        payload["expires_at"] = now_s + payload["ttl_s"]
    data = {
        "channel_id": channel.channel_id,
        "op_id": op_id,
        "message_id": message_id,
        "thing_id": fields.get("thing_id"),
        "accepted": True,
    }
    severity = GATEWAY_TO_ROUTE_SEVERITY[fields["severity"]]
    return Prepared(payload, data, severity, key, when)


def prepare_lifecycle(
    route: str,
    kind: str,
    channel: ChannelRow,
    op_id: str,
    fields: dict[str, Any],
    object_id: str,
    lifecycle_id: uuid.UUID,
    previous: dict[str, Any] | None,
    sequence: int,
) -> Prepared:
    """The lifecycle's state after this call (`previous`: its state before, None on create) and its event."""
    state, stale = apply(kind, route, previous, fields)
    columns = {
        "id": lifecycle_id,
        "title": state["title"],
        "description": state["description"],
        "status": state["status"],
        "message": state["message"],
        "severity": state["severity"],
        "state": state["state"],
        "is_open": state["open"],
        "attrs": Jsonb(state["attrs"], dumps=json_text),
        "details": Jsonb(state, dumps=json_text),
        "started_at": timestamp(state["started_at"]),
        "ended_at": timestamp(state["ended_at"]),
        "last_event_time": timestamp(state["last_event_time"]),
    }
    if kind == "incident":
        key = incident_lifecycle_key(channel.channel_id, object_id)
    else:
        key = thing_lifecycle_key(channel.channel_id, object_id)
    when = float(fields["event_time"] if kind == "incident" else fields["observed_at"])
    payload = payload_of(route, channel, op_id, fields)
    payload["incident_id" if kind == "incident" else "thing_id"] = object_id
    if kind == "incident" and "thing_id" in fields:
        payload["thing_id"] = fields["thing_id"]
    payload["lifecycle"] = {
        "kind": kind,
        "id": object_id,
        "key": key,
        "sequence": sequence,
        "event_time": when,
        "stale": stale,
    }
    payload["state"] = state
    data: dict[str, Any] = {"channel_id": channel.channel_id, "op_id": op_id}
    if kind == "incident":
        data |= {"event_id": object_id, "thing_id": fields.get("thing_id"), "accepted": True}
        severity = GATEWAY_TO_ROUTE_SEVERITY[state["peak_severity"] or fields["severity"]]
    else:
        data |= {"thing_id": object_id, "accepted": True}
        severity = "info"
    return Prepared(payload, data, severity, key, when, lifecycle_id, sequence, columns)


def event_params(
    route: str, channel: ChannelRow, op_id: str, prepared: Prepared, grace_s: float
) -> dict[str, Any]:
    """The event row's values (but its id): INSERT_EVENT_SQL's and CREATE_EVENT_CTE's parameters."""
    payload = prepared.payload
    digest = hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return {
        "kind": KIND_OF_ROUTE[route],
        "type": EVENT_TYPE_OF_ROUTE[route],
        "project": channel.project,
        "environment": None,
        "severity": prepared.severity,
        "payload": Jsonb(payload, dumps=json_text),
        # Unique like every event's key; the op_id claim already made it unique per channel.
        "key": f"gw:{channel.channel_id}:{op_id}",
        "hash": digest,  # INSERT_EVENT_SQL's name
        "event_hash": digest,  # CREATE_EVENT_CTE's ("hash" there is the claim's request hash)
        "lifecycle_key": prepared.key,
        "grace_s": grace_s,
    }
