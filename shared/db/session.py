"""Engine and session factory, one engine per process (recreated after fork in workers)."""

from __future__ import annotations

import threading

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from shared.config import Settings

_lock = threading.Lock()
_engines: dict[str, Engine] = {}


def make_engine(settings: Settings) -> Engine:
    return create_engine(
        settings.database_url,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_pool_size,
        pool_pre_ping=True,
        pool_timeout=5,
        # A dead database must turn into a fast 503, not a hung request.
        connect_args={"connect_timeout": 3},
    )


def get_engine(settings: Settings) -> Engine:
    with _lock:
        engine = _engines.get(settings.database_url)
        if engine is None:
            engine = _engines[settings.database_url] = make_engine(settings)
        return engine


def dispose_engines() -> None:
    """Forget engines inherited across fork; the child must open its own connections."""
    with _lock:
        for engine in _engines.values():
            engine.dispose(close=False)
        _engines.clear()


def session_factory(settings: Settings) -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(settings), expire_on_commit=False)
