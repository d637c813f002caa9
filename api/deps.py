"""Request dependencies: settings, database sessions, and API-key authentication."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session

from api.errors import database_unavailable, forbidden, unauthorized
from shared.crypto import hash_api_key
from shared.db.models import ApiKey

# A key's scopes are cached this long per process, so ingestion does not read the key table per request.
# Revoking a key therefore takes effect within this many seconds.
KEY_CACHE_TTL_S = 5.0
MAX_KEY_CHARS = 200


@dataclass(frozen=True)
class Principal:
    key_id: str
    name: str
    scopes: frozenset[str]
    project: str | None

    def require(self, scope: str) -> None:
        if "admin" not in self.scopes and scope not in self.scopes:
            raise forbidden(f"this key lacks the {scope!r} scope")

    def may_see_project(self, project: str) -> bool:
        return self.project is None or self.project == project or "admin" in self.scopes

    def require_project(self, project: str) -> None:
        if not self.may_see_project(project):
            raise forbidden(f"this key is bound to project {self.project!r}")


class _KeyCache:
    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, Principal | None]] = {}
        self._lock = threading.Lock()

    def get(self, key_hash: str) -> tuple[bool, Principal | None]:
        with self._lock:
            hit = self._entries.get(key_hash)
        if hit is None or hit[0] < time.monotonic():
            return False, None
        return True, hit[1]

    def forget(self, key_hash: str) -> None:
        """Drop a revoked key at once in this process (other processes notice within the TTL)."""
        with self._lock:
            self._entries.pop(key_hash, None)

    def put(self, key_hash: str, principal: Principal | None) -> None:
        with self._lock:
            if len(self._entries) > 10_000:
                self._entries.clear()
            self._entries[key_hash] = (time.monotonic() + KEY_CACHE_TTL_S, principal)


key_cache = _KeyCache()


def get_session(request: Request) -> Iterator[Session]:
    session: Session = request.app.state.sessions()
    try:
        yield session
    except (OperationalError, PoolTimeout) as exc:
        session.rollback()
        raise database_unavailable() from exc
    except DBAPIError as exc:
        session.rollback()
        if exc.connection_invalidated:
            raise database_unavailable() from exc
        raise
    finally:
        session.close()


DbSession = Annotated[Session, Depends(get_session)]


def _presented_key(request: Request) -> str | None:
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return None
    return request.headers.get("x-api-key")


def _active_key(session: Session, *where: Any) -> Principal | None:
    """The one rule for a usable key: it exists and is not revoked; its row gives the scopes and project."""
    row = session.scalar(select(ApiKey).where(*where, ApiKey.revoked_at.is_(None)))
    return Principal(str(row.id), row.name, frozenset(row.scopes), row.project) if row is not None else None


def principal_for_key(session: Session, raw: str | None) -> Principal | None:
    """The principal of a presented key (cached for KEY_CACHE_TTL_S), or None if it is not a usable key."""
    if not raw or len(raw) > MAX_KEY_CHARS:
        return None
    key_hash = hash_api_key(raw)
    cached, principal = key_cache.get(key_hash)
    if not cached:
        principal = _active_key(session, ApiKey.key_hash == key_hash)
        key_cache.put(key_hash, principal)
    return principal


def principal_for_key_id(session: Session, key_id: uuid.UUID) -> Principal | None:
    """The principal of a stored key by id (a console session holds the id, never the key), if still usable."""
    return _active_key(session, ApiKey.id == key_id)


def authenticate(request: Request, session: DbSession) -> Principal:
    principal = principal_for_key(session, _presented_key(request))
    if principal is None:
        raise unauthorized()
    return principal


Authenticated = Annotated[Principal, Depends(authenticate)]


def require_admin(principal: Authenticated) -> Principal:
    principal.require("admin")
    return principal


Admin = Annotated[Principal, Depends(require_admin)]


def require_read(principal: Authenticated) -> Principal:
    """GET routes of the management API: `read` or `admin`."""
    principal.require("read")
    return principal


Reader = Annotated[Principal, Depends(require_read)]
