"""Engine and session factory, one engine per process (recreated after fork in workers)."""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from shared.config import Settings
from shared.db import adapters

_lock = threading.Lock()
_engines: dict[str, Engine] = {}


def connection_options(settings: Settings) -> str:
    """libpq `options` for every connection the API and workers open: a statement or a lock wait that outlives
    its bound is cancelled by PostgreSQL itself (SQLSTATE 57014 / 55P03, an OperationalError), so a stalled
    database or a held lock turns into a 503 or a failed task that the sweeper redoes, never a hang.
    Migrations connect without them (shared/migrations/env.py): a schema change may rightly take longer."""
    statement_ms = max(1, round(settings.database_statement_timeout_s * 1000))
    lock_ms = max(1, round(settings.database_lock_timeout_s * 1000))
    return f"-c statement_timeout={statement_ms} -c lock_timeout={lock_ms}"


def make_engine(settings: Settings, pool_size: int | None = None) -> Engine:
    """`pool_size` connections kept open (default `database_pool_size`), as many again opened per use beyond."""
    size = pool_size or settings.database_pool_size
    engine = create_engine(
        settings.database_url,
        pool_size=size,
        max_overflow=size,
        pool_pre_ping=True,
        pool_timeout=5,
        # A dead database must turn into a fast 503, not a hung request; a stalled one too (the options).
        connect_args={"connect_timeout": 3, "options": connection_options(settings)},
    )
    event.listen(engine, "connect", _on_connect)
    return engine


def _on_connect(dbapi_connection: Any, _record: Any) -> None:
    adapters.register(dbapi_connection)


def get_engine(settings: Settings, pool_size: int | None = None) -> Engine:
    # Keyed by the options too: two apps in one process (tests) with other bounds get their own engine.
    key = f"{settings.database_url} {connection_options(settings)} {pool_size}"
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = make_engine(settings, pool_size)
        return engine


def dispose_engines() -> None:
    """Forget engines inherited across fork; the child must open its own connections."""
    with _lock:
        for engine in _engines.values():
            engine.dispose(close=False)
        _engines.clear()


def session_factory(settings: Settings, pool_size: int | None = None) -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(settings, pool_size), expire_on_commit=False)
