"""The ingestion hot path, async end to end: authenticate, insert the event, hand it to the fan-out publisher.

Ingest runs on the event loop with psycopg's async pool and one autocommit INSERT per event (a single round
trip), not through the thread pool and the ORM like the admin routes: at a thousand events a second the thread
hand-off, the session and statement compilation cost more CPU than the insert itself (bench/run.py).
The event row is committed before the 202; if PostgreSQL cannot be reached the answer is 503 and nothing is
acknowledged.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
from fastapi import Request
from fastapi.responses import Response
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from api.deps import MAX_KEY_CHARS, Principal, _presented_key, key_cache
from api.errors import ApiError, database_unavailable, envelope, unauthorized
from shared.config import Settings
from shared.crypto import hash_api_key
from shared.db.session import connection_options

_INSERT_SQL = """
INSERT INTO event (id, kind, type, project, environment, severity, payload, idempotency_key, request_hash,
                   lifecycle_key, created_at, next_fanout_at)
VALUES (%(id)s, %(kind)s, %(type)s, %(project)s, %(environment)s, %(severity)s, %(payload)s, %(key)s,
        %(hash)s, %(lifecycle_key)s, now(), now() + make_interval(secs => %(grace_s)s))
ON CONFLICT (project, idempotency_key) DO NOTHING
RETURNING id
"""
_EXISTING_SQL = "SELECT id, request_hash FROM event WHERE project = %(project)s AND idempotency_key = %(key)s"
_KEY_SQL = "SELECT id, name, scopes, project FROM api_key WHERE key_hash = %(hash)s AND revoked_at IS NULL"


def libpq_url(sqlalchemy_url: str) -> str:
    return sqlalchemy_url.replace("postgresql+psycopg://", "postgresql://", 1)


class EventStore:
    """The async connection pool for ingestion, bound to the event loop that serves requests.

    An async pool belongs to one loop. uvicorn has exactly one, but an ASGI host may drive the app from
    another loop than the lifespan's (test clients do), so the pool is (re)made for the running loop.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._pool: AsyncConnectionPool | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def pool(self) -> AsyncConnectionPool:
        loop = asyncio.get_running_loop()
        if self._pool is None or self._loop is not loop:
            pool = AsyncConnectionPool(
                libpq_url(self._settings.database_url),
                min_size=2,
                max_size=self._settings.database_pool_size,
                kwargs={
                    "autocommit": True,
                    "connect_timeout": 3,
                    "options": connection_options(self._settings),
                },
                timeout=5,
                open=False,
            )
            # Do not wait for connections: an API started while PostgreSQL is down must answer 503.
            await pool.open(wait=False)
            self._pool, self._loop = pool, loop
        return self._pool

    async def open(self) -> None:
        await self.pool()

    async def close(self) -> None:
        if self._pool is not None and self._loop is asyncio.get_running_loop():
            await self._pool.close()
        self._pool = self._loop = None

    async def principal(self, request: Request) -> Principal:
        raw = _presented_key(request)
        if not raw or len(raw) > MAX_KEY_CHARS:
            raise unauthorized()
        key_hash = hash_api_key(raw)
        cached, principal = key_cache.get(key_hash)
        if not cached:
            row = await self._fetchone(_KEY_SQL, {"hash": key_hash})
            principal = Principal(str(row[0]), row[1], frozenset(row[2]), row[3]) if row else None
            key_cache.put(key_hash, principal)
        if principal is None:
            raise unauthorized()
        return principal

    async def _fetchone(self, sql: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
        try:
            async with (await self.pool()).connection() as conn:
                cursor = await conn.execute(sql, params)
                return await cursor.fetchone()
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise database_unavailable() from exc
        except (psycopg.DataError, UnicodeEncodeError) as exc:
            if not _is_encoding_error(exc):
                raise  # e.g. a value too long for its column: our bug, answered 500 and logged
            # Text PostgreSQL cannot store (a NUL character, a lone surrogate): the client's input, not an outage.
            raise ApiError(
                422, "invalid_field", "a text field contains a character that cannot be stored"
            ) from exc

    async def accept(
        self,
        *,
        kind: str,
        event_type: str,
        payload: dict[str, Any],
        severity: str,
        lifecycle_key: str,
        op_id: str,
    ) -> tuple[uuid.UUID, bool]:
        """Insert the event; (event id, whether it was a replay of an earlier request with the same key)."""
        payload_hash = request_hash(payload)
        row = await self._fetchone(
            _INSERT_SQL,
            {
                "id": uuid.uuid4(),
                "kind": kind,
                "type": event_type,
                "project": payload["project"],
                "environment": payload.get("environment"),
                "severity": severity,
                "payload": Jsonb(payload, dumps=_dumps),
                # Unique per (project, key): two tenants choosing the same key do not collide.
                "key": op_id,
                "hash": payload_hash,
                "lifecycle_key": lifecycle_key,
                "grace_s": self._settings.fanout_grace_s,
            },
        )
        if row is not None:
            return row[0], False
        existing = await self._fetchone(_EXISTING_SQL, {"project": payload["project"], "key": op_id})
        if existing is None:  # deleted between the two statements: treat as new, the client retries
            raise ApiError(409, "idempotency_conflict", "the event for this idempotency key was just removed")
        if existing[1] != payload_hash:
            raise ApiError(
                409, "idempotency_conflict", "this idempotency key was used with a different event"
            )
        return existing[0], True

    async def accept_many(self, items: list[NewEvent]) -> list[tuple[uuid.UUID, bool] | ApiError]:
        """Insert the events in ONE transaction (all or none stored); for each, in order: (event id, whether it
        replays an earlier event with the same key, in this batch or before it), or why it was refused (its
        key was used for a different event)."""
        if not items:
            return []
        grace_s = self._settings.fanout_grace_s
        ids = [uuid.uuid4() for _ in items]
        params = {
            "ids": ids,
            "kinds": [i.kind for i in items],
            "types": [i.event_type for i in items],
            "projects": [i.payload["project"] for i in items],
            "environments": [i.payload.get("environment") for i in items],
            "severities": [i.severity for i in items],
            "payloads": [_dumps(i.payload) for i in items],
            "keys": [i.op_id for i in items],
            "hashes": [i.request_hash for i in items],
            "lifecycle_keys": [i.lifecycle_key for i in items],
            "grace_s": grace_s,
        }
        try:
            async with (await self.pool()).connection() as conn, conn.transaction():
                cursor = await conn.execute(_INSERT_MANY_SQL, params)
                inserted = {(row[1], row[2]): row[0] for row in await cursor.fetchall()}
                known: dict[tuple[str, str], tuple[uuid.UUID, str]] = {}
                others = sorted({(i.payload["project"], i.op_id) for i in items} - inserted.keys())
                if others:
                    cursor = await conn.execute(
                        _EXISTING_MANY_SQL,
                        {"projects": [p for p, _ in others], "keys": [k for _, k in others]},
                    )
                    known = {(row[2], row[3]): (row[0], row[1]) for row in await cursor.fetchall()}
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise database_unavailable() from exc
        except (psycopg.DataError, UnicodeEncodeError) as exc:
            if not _is_encoding_error(exc):
                raise
            raise ApiError(
                422,
                "invalid_field",
                "a text field contains a character that cannot be stored; nothing was stored",
            ) from exc
        out: list[tuple[uuid.UUID, bool] | ApiError] = []
        for event_id, item in zip(ids, items, strict=True):
            key = (item.payload["project"], item.op_id)
            if inserted.get(key) == event_id:
                out.append((event_id, False))
                known[key] = (event_id, item.request_hash)  # a later item with this key replays this one
                continue
            existing = known.get(key)
            if existing is None:  # deleted between the two statements: treat as new, the client retries
                out.append(
                    ApiError(
                        409, "idempotency_conflict", "the event for this idempotency key was just removed"
                    )
                )
            elif existing[1] != item.request_hash:
                out.append(
                    ApiError(
                        409, "idempotency_conflict", "this idempotency key was used with a different event"
                    )
                )
            else:
                out.append((existing[0], True))
        return out


@dataclass(frozen=True)
class NewEvent:
    """One event of a batch, validated, as `EventStore.accept` takes it."""

    kind: str
    event_type: str
    payload: dict[str, Any]
    severity: str
    lifecycle_key: str
    op_id: str

    @property
    def request_hash(self) -> str:
        return request_hash(self.payload)


def request_hash(payload: dict[str, Any]) -> str:
    """What makes a replay with the same key the same event (the key's earlier use is compared with it)."""
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()


# One statement for the whole batch (arrays, not a VALUES list: parsed and planned once whatever its size).
_INSERT_MANY_SQL = """
INSERT INTO event (id, kind, type, project, environment, severity, payload, idempotency_key, request_hash,
                   lifecycle_key, created_at, next_fanout_at)
SELECT u.id, u.kind, u.type, u.project, u.environment, u.severity, CAST(u.payload AS jsonb), u.key, u.hash,
       u.lifecycle_key, now(), now() + make_interval(secs => %(grace_s)s)
  FROM unnest(%(ids)s::uuid[], %(kinds)s::text[], %(types)s::text[], %(projects)s::text[],
              %(environments)s::text[], %(severities)s::text[], %(payloads)s::text[], %(keys)s::text[],
              %(hashes)s::text[], %(lifecycle_keys)s::text[])
       WITH ORDINALITY AS u(id, kind, type, project, environment, severity, payload, key, hash, lifecycle_key, n)
 ORDER BY u.n
ON CONFLICT (project, idempotency_key) DO NOTHING
RETURNING id, project, idempotency_key
"""
_EXISTING_MANY_SQL = """
SELECT id, request_hash, project, idempotency_key FROM event
 WHERE (project, idempotency_key) IN (SELECT * FROM unnest(%(projects)s::text[], %(keys)s::text[]))
"""


# untranslatable_character (`\u0000` in JSONB), character_not_in_repertoire (invalid UTF-8)
_ENCODING_SQLSTATES = frozenset({"22P05", "22021"})


def _is_encoding_error(exc: Exception) -> bool:
    if isinstance(exc, UnicodeEncodeError):
        return True
    sqlstate = getattr(exc, "sqlstate", None)
    # psycopg refuses a NUL in a text parameter itself, before PostgreSQL sees it: no SQLSTATE then.
    return sqlstate in _ENCODING_SQLSTATES or (sqlstate is None and "NUL" in str(exc))


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def accepted_response(event_id: uuid.UUID, op_id: str, duplicate: bool) -> Response:
    body = envelope({"event_id": str(event_id), "op_id": op_id, "accepted": True, "duplicate": duplicate})
    return Response(orjson.dumps(body), status_code=202, media_type="application/json")
