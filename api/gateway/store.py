"""The gateway's database side, on the ingest path's async pool (api/ingest.py `EventStore`): channel rows
for authentication, and per accepted call the op_id claim, the lifecycle's move and the `event` row, all
committed together before the answer is sent. What is written is computed first (api/gateway/prepare.py); the
SQL is api/gateway/store_sql.py.

Idempotency: `gateway_dispatch` is unique on (channel_id, op_id). A second call with the same op_id waits on
the first one's row lock, then finds it: same body -> the first answer, nothing new; another body -> 409.
Concurrent updates of one lifecycle are serialised by `FOR UPDATE` on its row, which is what makes the
per-lifecycle sequence gap-free and ordered by arrival.

Round trips are what a gateway call costs the API (bench/gateway.py; six to seven per call made a channel-auth
call cost twice the release route's API CPU), so:
- a create (`/message`, `/event/create`, `/thing/create`, without a thing to check) is ONE statement in
  autocommit: every id is made here, so the claim carries its final answer and the lifecycle and event rows
  are inserted only if it claimed; a replay claims nothing there and takes the general transaction;
- a step (update, close, archive, delete) is a transaction of two statements: claim + lock the lifecycle row,
  then the lifecycle's new state + the event + the answer;
- anything else (a create with a `thing_id` to check) is the general transaction, a statement at a time.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import PoolTimeout

from api.errors import ApiError, database_unavailable, not_found
from api.gateway.prepare import (
    KIND_OF_ROUTE,
    Prepared,
    event_params,
    json_text,
    prepare_lifecycle,
    prepare_message,
    timestamp,
)
from api.gateway.state import LifecycleRefused
from api.gateway.store_sql import (
    CHANNEL_SQL,
    CLAIM_AND_LOCK_SQL,
    CLAIM_OP_SQL,
    CREATE_LIFECYCLE_SQL,
    CREATE_MESSAGE_SQL,
    CREATE_ROUTES,
    EXISTING_OP_SQL,
    FINISH_OP_SQL,
    INSERT_LIFECYCLE_SQL,
    STEP_WRITE_SQL,
    THING_STATE_SQL,
)
from api.gateway.validation import GatewayInvalid
from api.ingest import _INSERT_SQL as INSERT_EVENT_SQL
from api.ingest import EventStore
from shared.channels import ChannelRow


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
        kind = KIND_OF_ROUTE[route]
        thing_ref = fields.get("thing_id") if kind != "thing" else None
        if kind != "message" and route not in CREATE_ROUTES:
            return await self._step(conn, route, kind, channel, op_id, body_hash, dispatch_id, fields)
        cursor = await conn.execute(
            CLAIM_OP_SQL, {**ids, "id": dispatch_id, "route": route, "hash": body_hash}
        )
        if await cursor.fetchone() is None:
            return await self._replay(conn, route, body_hash, ids)
        if thing_ref is not None:
            await self._require_thing(conn, channel.channel_id, thing_ref)
        if kind == "message":
            return await self._message(conn, route, channel, op_id, dispatch_id, fields)
        return await self._lifecycle(conn, route, kind, channel, op_id, dispatch_id, fields)

    async def _replay(
        self, conn: psycopg.AsyncConnection[Any], route: str, body_hash: str, ids: dict[str, str]
    ) -> Accepted:
        """The op_id is taken: the first answer if this is the same request, else 409."""
        cursor = await conn.execute(EXISTING_OP_SQL, ids)
        existing = await cursor.fetchone()
        if existing is None or existing[0] != route or existing[1] != body_hash:
            raise ApiError(409, "op_id_conflict", "this op_id was already used with a different request")
        return Accepted(existing[2], None)

    async def _step(
        self,
        conn: psycopg.AsyncConnection[Any],
        route: str,
        kind: str,
        channel: ChannelRow,
        op_id: str,
        body_hash: str,
        dispatch_id: uuid.UUID,
        fields: dict[str, Any],
    ) -> Accepted:
        """An update, close, archive or delete in two statements within the transaction: claim the op and lock
        the lifecycle row; then move the lifecycle, insert the event and record the answer."""
        ids = {"channel_id": channel.channel_id, "op_id": op_id}
        object_id = fields["event_id" if kind == "incident" else "thing_id"]
        cursor = await conn.execute(
            CLAIM_AND_LOCK_SQL,
            {
                **ids,
                "id": dispatch_id,
                "route": route,
                "hash": body_hash,
                "kind": kind,
                "object_id": object_id,
            },
        )
        claimed, lifecycle_id, previous, last_sequence = await cursor.fetchone() or (None, None, None, 0)
        if claimed is None:
            return await self._replay(conn, route, body_hash, ids)
        if kind == "incident" and "thing_id" in fields:
            await self._require_thing(conn, channel.channel_id, fields["thing_id"])
        if lifecycle_id is None:
            what = "event" if kind == "incident" else "thing"
            raise ApiError(404, f"{what}_not_found", f"no such {what} on this channel")
        prepared = prepare_lifecycle(
            route, kind, channel, op_id, fields, object_id, lifecycle_id, previous, last_sequence + 1
        )
        assert prepared.columns is not None
        event_id = uuid.uuid4()
        cursor = await conn.execute(
            STEP_WRITE_SQL,
            {
                **prepared.columns,
                **event_params(route, channel, op_id, prepared, self._grace_s),
                "severity_shown": prepared.columns["severity"],  # "severity" is the event row's
                "event_id": event_id,
                "dispatch_id": dispatch_id,
                "sequence": prepared.sequence,
                "event_time": timestamp(prepared.when),
                "response": Jsonb(prepared.data, dumps=json_text),
            },
        )
        row = await cursor.fetchone()
        if row is None or row[0] is None:  # the key is taken by an event older than this op's claim
            raise ApiError(409, "op_id_conflict", "this op_id was already used on this channel")
        return Accepted(prepared.data, event_id)

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
                prepare_message(route, channel, op_id, fields),
                CREATE_MESSAGE_SQL,
                {},
            )
        else:
            object_id = uuid.uuid4().hex
            prepared = prepare_lifecycle(
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
            **event_params(route, channel, op_id, prepared, self._grace_s),
            "dispatch_id": uuid.uuid4(),
            "channel_id": channel.channel_id,
            "op_id": op_id,
            "route": route,
            "hash": body_hash,
            "lifecycle_id": prepared.lifecycle_id,
            "event_id": event_id,
            "event_time": timestamp(prepared.when),
            "response": Jsonb(prepared.data, dumps=json_text),
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
        prepared = prepare_message(route, channel, op_id, fields)
        return await self._write_event(conn, route, channel, op_id, dispatch_id, prepared)

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
        """A create within the general transaction (one with a `thing_id` to check first)."""
        object_id, lifecycle_id = uuid.uuid4().hex, uuid.uuid4()
        prepared = prepare_lifecycle(route, kind, channel, op_id, fields, object_id, lifecycle_id, None, 1)
        assert prepared.columns is not None
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
        return await self._write_event(conn, route, channel, op_id, dispatch_id, prepared)

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
            INSERT_EVENT_SQL,
            {"id": uuid.uuid4(), **event_params(route, channel, op_id, prepared, self._grace_s)},
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
                "event_time": timestamp(when),
                "response": Jsonb(data, dumps=json_text),
            },
        )


__all__ = ["Accepted", "GatewayInvalid", "GatewayStore", "not_found", "request_hash"]
