"""The gateway's database side, on the ingest path's async pool (api/ingest.py `EventStore`): channel rows
for authentication, and one transaction per accepted call that claims the op_id, moves the lifecycle and
inserts the `event` row, so the answer is sent only once all of it is committed.

Idempotency: `gateway_dispatch` is unique on (channel_id, op_id). A second call with the same op_id waits on
the first one's row lock, then finds it: same body -> the first answer, nothing new; another body -> 409.
Concurrent updates of one lifecycle are serialised by `SELECT ... FOR UPDATE` on its row, which is what makes
the per-lifecycle sequence gap-free and ordered by arrival.

A create (`/message`, `/event/create`, `/thing/create`, without a thing to check) is ONE statement in autocommit
(`_CREATE_SQL`: the claim with its final answer, the lifecycle row, the event row): every id is made here, so
nothing waits on an earlier result. The general transaction is six round trips (BEGIN, claim, lifecycle, event,
answer, COMMIT) and made a channel-auth call cost twice the release route's API CPU (bench/gateway.py). A replay
(the op_id is taken) claims nothing there and takes the general path, which answers it.
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
from api.gateway.store_sql import (
    CHANNEL_SQL,
    CLAIM_OP_SQL,
    CREATE_LIFECYCLE_SQL,
    CREATE_MESSAGE_SQL,
    CREATE_ROUTES,
    EXISTING_OP_SQL,
    FINISH_OP_SQL,
    INSERT_LIFECYCLE_SQL,
    LOCK_SQL,
    THING_STATE_SQL,
    UPDATE_LIFECYCLE_SQL,
)
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
                cursor = await conn.execute(CHANNEL_SQL, {"id": channel_id})
                row = await cursor.fetchone()
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise database_unavailable() from exc
        return ChannelRow(row[0], row[1], row[2], row[3]) if row else None

    async def dispatch(
        self, route: str, channel: ChannelRow, op_id: str, body_hash: str, fields: dict[str, Any]
    ) -> Accepted:
        try:
            async with (await self._events.pool()).connection() as conn:
                if route in CREATE_ROUTES and "thing_id" not in fields:
                    created = await self._create(conn, route, channel, op_id, body_hash, fields)
                    if created is not None:
                        return created
                async with conn.transaction():
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
            CLAIM_OP_SQL, {**ids, "id": dispatch_id, "route": route, "hash": body_hash}
        )
        if await cursor.fetchone() is None:
            cursor = await conn.execute(EXISTING_OP_SQL, ids)
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

    async def _create(
        self,
        conn: psycopg.AsyncConnection[Any],
        route: str,
        channel: ChannelRow,
        op_id: str,
        body_hash: str,
        fields: dict[str, Any],
    ) -> Accepted | None:
        """A create in one statement (autocommit); None if it claimed nothing (a replay or a conflict)."""
        kind = KIND_OF_ROUTE[route]
        if kind == "message":
            prepared, sql, extra = (
                self._prepare_message(route, channel, op_id, fields),
                CREATE_MESSAGE_SQL,
                {},
            )
        else:
            object_id = uuid.uuid4().hex
            prepared = self._prepare_lifecycle(
                route, kind, channel, op_id, fields, object_id, uuid.uuid4(), None, 1
            )
            assert prepared.columns is not None
            sql = CREATE_LIFECYCLE_SQL
            extra = {
                **prepared.columns,
                "lifecycle_kind": kind,
                "object_id": object_id,
                "severity_shown": prepared.columns["severity"],
            }
        event_id = uuid.uuid4()
        params = {
            **extra,
            **self._event_params(route, channel, op_id, prepared),
            "dispatch_id": uuid.uuid4(),
            "channel_id": channel.channel_id,
            "op_id": op_id,
            "route": route,
            "hash": body_hash,
            "lifecycle_id": prepared.lifecycle_id,
            "event_id": event_id,
            "event_time": _ts(prepared.when),
            "response": Jsonb(prepared.data, dumps=_dumps),
        }
        cursor = await conn.execute(sql, params)
        if await cursor.fetchone() is None:
            return None
        return Accepted(prepared.data, event_id)

    async def _require_thing(
        self, conn: psycopg.AsyncConnection[Any], channel_id: str, thing_id: str
    ) -> None:
        cursor = await conn.execute(THING_STATE_SQL, {"object_id": thing_id, "channel_id": channel_id})
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
        prepared = self._prepare_message(route, channel, op_id, fields)
        return await self._write_event(conn, route, channel, op_id, dispatch_id, prepared)

    def _prepare_message(
        self, route: str, channel: ChannelRow, op_id: str, fields: dict[str, Any]
    ) -> Prepared:
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
        return Prepared(payload, data, severity, key, when)

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
                LOCK_SQL, {"kind": kind, "object_id": object_id, "channel_id": channel.channel_id}
            )
            row = await cursor.fetchone()
            if row is None:
                what = "event" if kind == "incident" else "thing"
                raise ApiError(404, f"{what}_not_found", f"no such {what} on this channel")
            lifecycle_id, previous, sequence = row[0], row[1], row[2] + 1
        prepared = self._prepare_lifecycle(
            route, kind, channel, op_id, fields, object_id, lifecycle_id, previous, sequence
        )
        assert prepared.columns is not None
        if creating:
            await conn.execute(
                INSERT_LIFECYCLE_SQL,
                {
                    **prepared.columns,
                    "kind": kind,
                    "object_id": object_id,
                    "channel_id": channel.channel_id,
                    "project": channel.project,
                },
            )
        else:
            await conn.execute(UPDATE_LIFECYCLE_SQL, prepared.columns)
        return await self._write_event(conn, route, channel, op_id, dispatch_id, prepared)

    def _prepare_lifecycle(
        self,
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
            "attrs": Jsonb(state["attrs"], dumps=_dumps),
            "details": Jsonb(state, dumps=_dumps),
            "started_at": _ts(state["started_at"]),
            "ended_at": _ts(state["ended_at"]),
            "last_event_time": _ts(state["last_event_time"]),
        }
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
        return Prepared(payload, data, severity, key, when, lifecycle_id, sequence, columns)

    async def _write_event(
        self,
        conn: psycopg.AsyncConnection[Any],
        route: str,
        channel: ChannelRow,
        op_id: str,
        dispatch_id: uuid.UUID,
        prepared: Prepared,
    ) -> Accepted:
        """The event row and the op's answer, within the general path's transaction."""
        cursor = await conn.execute(
            INSERT_EVENT_SQL, {"id": uuid.uuid4(), **self._event_params(route, channel, op_id, prepared)}
        )
        row = await cursor.fetchone()
        if row is None:  # the key is taken by an event from before this channel was deleted and re-made
            raise ApiError(409, "op_id_conflict", "this op_id was already used on this channel")
        event_row_id: uuid.UUID = row[0]
        await self._finish(
            conn,
            dispatch_id,
            prepared.lifecycle_id,
            prepared.sequence,
            event_row_id,
            prepared.when,
            prepared.data,
        )
        return Accepted(prepared.data, event_row_id)

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

    def _event_params(
        self, route: str, channel: ChannelRow, op_id: str, prepared: Prepared
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
            "payload": Jsonb(payload, dumps=_dumps),
            # Unique like every event's key; the op_id claim already made it unique per channel.
            "key": f"gw:{channel.channel_id}:{op_id}",
            "hash": digest,  # INSERT_EVENT_SQL's name
            "event_hash": digest,  # CREATE_EVENT_CTE's ("hash" there is the claim's request hash)
            "lifecycle_key": prepared.key,
            "grace_s": self._grace_s,
        }

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
            FINISH_OP_SQL,
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
