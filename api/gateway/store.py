"""The gateway's database side, on the ingest path's async pool (api/ingest.py `EventStore`): channel rows
for authentication, and one transaction per accepted call that claims the op_id, moves the lifecycle and
inserts the `event` row, so the answer is sent only once all of it is committed.

Idempotency: `gateway_dispatch` is unique on (channel_id, op_id). A second call with the same op_id waits on
the first one's row lock, then finds it: same body -> the first answer, nothing new; another body -> 409.
Concurrent updates of one lifecycle are serialised by `SELECT ... FOR UPDATE` on its row, which is what makes
the per-lifecycle sequence gap-free and ordered by arrival.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import PoolTimeout

from api.errors import ApiError, database_unavailable, not_found
from api.gateway.state import LifecycleRefused, apply
from api.gateway.validation import GatewayInvalid
from api.ingest import _INSERT_SQL as INSERT_EVENT_SQL
from api.ingest import EventStore
from shared.channels import ChannelRow
from shared.events import (
    GATEWAY_TO_ROUTE_SEVERITY,
    MAX_PUSH_TTL_S,
    incident_lifecycle_key,
    message_lifecycle_key,
    thing_lifecycle_key,
)

_CHANNEL_SQL = (
    "SELECT id, project, password_hash, version FROM channel WHERE id = %(id)s AND deleted_at IS NULL"
)
_CLAIM_OP_SQL = """
INSERT INTO gateway_dispatch (id, channel_id, op_id, route, request_hash)
VALUES (%(id)s, %(channel_id)s, %(op_id)s, %(route)s, %(hash)s)
ON CONFLICT (channel_id, op_id) DO NOTHING
RETURNING id
"""
_EXISTING_OP_SQL = """
SELECT route, request_hash, response FROM gateway_dispatch WHERE channel_id = %(channel_id)s AND op_id = %(op_id)s
"""
_LOCK_SQL = """
SELECT id, details, last_sequence FROM gateway_lifecycle
WHERE kind = %(kind)s AND object_id = %(object_id)s AND channel_id = %(channel_id)s
FOR UPDATE
"""
_THING_STATE_SQL = """
SELECT state FROM gateway_lifecycle WHERE kind = 'thing' AND object_id = %(object_id)s AND channel_id = %(channel_id)s
"""
_INSERT_LIFECYCLE_SQL = """
INSERT INTO gateway_lifecycle (id, kind, object_id, channel_id, project, title, description, status, message,
                               severity, state, is_open, attrs, details, started_at, ended_at, last_event_time,
                               last_sequence)
VALUES (%(id)s, %(kind)s, %(object_id)s, %(channel_id)s, %(project)s, %(title)s, %(description)s, %(status)s,
        %(message)s, %(severity)s, %(state)s, %(is_open)s, %(attrs)s, %(details)s, %(started_at)s,
        %(ended_at)s, %(last_event_time)s, 1)
"""
_UPDATE_LIFECYCLE_SQL = """
UPDATE gateway_lifecycle SET title = %(title)s, description = %(description)s, status = %(status)s,
       message = %(message)s, severity = %(severity)s, state = %(state)s, is_open = %(is_open)s,
       attrs = %(attrs)s, details = %(details)s, started_at = %(started_at)s, ended_at = %(ended_at)s,
       last_event_time = %(last_event_time)s, last_sequence = last_sequence + 1, updated_at = now()
WHERE id = %(id)s
RETURNING last_sequence
"""
_FINISH_OP_SQL = """
UPDATE gateway_dispatch SET lifecycle_id = %(lifecycle_id)s, sequence = %(sequence)s,
       event_row_id = %(event_row_id)s, event_time = %(event_time)s, response = %(response)s
WHERE id = %(id)s
"""


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _ts(seconds: float | None) -> datetime | None:
    return datetime.fromtimestamp(seconds, UTC) if seconds is not None else None


def request_hash(route: str, body: dict[str, Any]) -> str:
    """What makes two calls with one op_id "the same": the route and the body, without the password."""
    canonical = {k: v for k, v in body.items() if k != "password"}
    return hashlib.sha256(
        route.encode() + b"\0" + orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)
    ).hexdigest()


@dataclass(frozen=True)
class Accepted:
    data: dict[str, Any]
    event_row_id: uuid.UUID | None  # None on a replay: nothing new to fan out


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


class GatewayStore:
    def __init__(self, events: EventStore, fanout_grace_s: float) -> None:
        self._events = events
        self._grace_s = fanout_grace_s

    async def load_channel(self, channel_id: str) -> ChannelRow | None:
        try:
            async with (await self._events.pool()).connection() as conn:
                cursor = await conn.execute(_CHANNEL_SQL, {"id": channel_id})
                row = await cursor.fetchone()
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise database_unavailable() from exc
        return ChannelRow(row[0], row[1], row[2], row[3]) if row else None

    async def dispatch(
        self, route: str, channel: ChannelRow, op_id: str, body_hash: str, fields: dict[str, Any]
    ) -> Accepted:
        try:
            async with (await self._events.pool()).connection() as conn, conn.transaction():
                return await self._dispatch(conn, route, channel, op_id, body_hash, fields)
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise database_unavailable() from exc
        except psycopg.DataError as exc:
            raise ApiError(
                400, "invalid_character", "a text field contains a character that cannot be stored"
            ) from exc
        except LifecycleRefused as exc:
            raise ApiError(409, exc.error_code, exc.message) from None

    async def _dispatch(
        self,
        conn: psycopg.AsyncConnection[Any],
        route: str,
        channel: ChannelRow,
        op_id: str,
        body_hash: str,
        fields: dict[str, Any],
    ) -> Accepted:
        ids = {"channel_id": channel.channel_id, "op_id": op_id}
        dispatch_id = uuid.uuid4()
        cursor = await conn.execute(
            _CLAIM_OP_SQL, {**ids, "id": dispatch_id, "route": route, "hash": body_hash}
        )
        if await cursor.fetchone() is None:
            cursor = await conn.execute(_EXISTING_OP_SQL, ids)
            existing = await cursor.fetchone()
            if existing is None or existing[0] != route or existing[1] != body_hash:
                raise ApiError(409, "op_id_conflict", "this op_id was already used with a different request")
            return Accepted(existing[2], None)
        kind = KIND_OF_ROUTE[route]
        thing_ref = fields.get("thing_id") if kind != "thing" else None
        if thing_ref is not None:
            await self._require_thing(conn, channel.channel_id, thing_ref)
        if kind == "message":
            return await self._message(conn, route, channel, op_id, dispatch_id, fields)
        return await self._lifecycle(conn, route, kind, channel, op_id, dispatch_id, fields)

    async def _require_thing(
        self, conn: psycopg.AsyncConnection[Any], channel_id: str, thing_id: str
    ) -> None:
        cursor = await conn.execute(_THING_STATE_SQL, {"object_id": thing_id, "channel_id": channel_id})
        row = await cursor.fetchone()
        if row is None:
            raise ApiError(404, "thing_not_found", "no such thing on this channel")
        if row[0] == "deleted":
            raise ApiError(409, "thing_deleted", "this thing is deleted")

    async def _message(
        self,
        conn: psycopg.AsyncConnection[Any],
        route: str,
        channel: ChannelRow,
        op_id: str,
        dispatch_id: uuid.UUID,
        fields: dict[str, Any],
    ) -> Accepted:
        message_id = uuid.uuid4().hex
        key = message_lifecycle_key(channel.channel_id, message_id)
        when = fields.get("occurred_at") or datetime.now(UTC).timestamp()
        payload = self._payload(route, channel, op_id, fields)
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
        event_row_id = await self._insert_event(conn, route, channel, op_id, payload, severity, key)
        await self._finish(conn, dispatch_id, None, 1, event_row_id, when, data)
        return Accepted(data, event_row_id)

    async def _lifecycle(
        self,
        conn: psycopg.AsyncConnection[Any],
        route: str,
        kind: str,
        channel: ChannelRow,
        op_id: str,
        dispatch_id: uuid.UUID,
        fields: dict[str, Any],
    ) -> Accepted:
        id_field = "event_id" if kind == "incident" else "thing_id"
        creating = route.endswith("/create")
        if creating:
            object_id = uuid.uuid4().hex
            lifecycle_id, previous, sequence = uuid.uuid4(), None, 1
        else:
            object_id = fields[id_field]
            cursor = await conn.execute(
                _LOCK_SQL, {"kind": kind, "object_id": object_id, "channel_id": channel.channel_id}
            )
            row = await cursor.fetchone()
            if row is None:
                what = "event" if kind == "incident" else "thing"
                raise ApiError(404, f"{what}_not_found", f"no such {what} on this channel")
            lifecycle_id, previous, sequence = row[0], row[1], row[2] + 1
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
            "attrs": Jsonb(state["attrs"], dumps=_dumps),
            "details": Jsonb(state, dumps=_dumps),
            "started_at": _ts(state["started_at"]),
            "ended_at": _ts(state["ended_at"]),
            "last_event_time": _ts(state["last_event_time"]),
        }
        if creating:
            await conn.execute(
                _INSERT_LIFECYCLE_SQL,
                {
                    **columns,
                    "kind": kind,
                    "object_id": object_id,
                    "channel_id": channel.channel_id,
                    "project": channel.project,
                },
            )
        else:
            await conn.execute(_UPDATE_LIFECYCLE_SQL, columns)
        if kind == "incident":
            key = incident_lifecycle_key(channel.channel_id, object_id)
        else:
            key = thing_lifecycle_key(channel.channel_id, object_id)
        when = float(fields["event_time"] if kind == "incident" else fields["observed_at"])
        payload = self._payload(route, channel, op_id, fields)
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
        event_row_id = await self._insert_event(conn, route, channel, op_id, payload, severity, key)
        await self._finish(conn, dispatch_id, lifecycle_id, sequence, event_row_id, when, data)
        return Accepted(data, event_row_id)

    def _payload(self, route: str, channel: ChannelRow, op_id: str, fields: dict[str, Any]) -> dict[str, Any]:
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

    async def _insert_event(
        self,
        conn: psycopg.AsyncConnection[Any],
        route: str,
        channel: ChannelRow,
        op_id: str,
        payload: dict[str, Any],
        severity: str,
        lifecycle_key: str,
    ) -> uuid.UUID:
        cursor = await conn.execute(
            INSERT_EVENT_SQL,
            {
                "id": uuid.uuid4(),
                "kind": KIND_OF_ROUTE[route],
                "type": EVENT_TYPE_OF_ROUTE[route],
                "project": channel.project,
                "environment": None,
                "severity": severity,
                "payload": Jsonb(payload, dumps=_dumps),
                # Unique like every event's key; the op_id claim above already made it unique per channel.
                "key": f"gw:{channel.channel_id}:{op_id}",
                "hash": hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest(),
                "lifecycle_key": lifecycle_key,
                "grace_s": self._grace_s,
            },
        )
        row = await cursor.fetchone()
        if row is None:  # the key is taken by an event from before this channel was deleted and re-made
            raise ApiError(409, "op_id_conflict", "this op_id was already used on this channel")
        event_row_id: uuid.UUID = row[0]
        return event_row_id

    async def _finish(
        self,
        conn: psycopg.AsyncConnection[Any],
        dispatch_id: uuid.UUID,
        lifecycle_id: uuid.UUID | None,
        sequence: int,
        event_row_id: uuid.UUID,
        when: float,
        data: dict[str, Any],
    ) -> None:
        await conn.execute(
            _FINISH_OP_SQL,
            {
                "id": dispatch_id,
                "lifecycle_id": lifecycle_id,
                "sequence": sequence,
                "event_row_id": event_row_id,
                "event_time": _ts(when),
                "response": Jsonb(data, dumps=_dumps),
            },
        )


__all__ = ["Accepted", "GatewayInvalid", "GatewayStore", "not_found", "request_hash"]
