"""Shared test set-up: real PostgreSQL and Redis on 127.0.0.1, one migrated template database per session."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest

# pytest-xdist's workers run with COLUMNS=80 and LINES=24 set, and Rich freezes a width given by COLUMNS when its
# Console is built (api/cli_client.py builds it at import): the CLI tests pass their own COLUMNS per invocation,
# which only works if none was frozen at import.
os.environ.pop("COLUMNS", None)
os.environ.pop("LINES", None)

PG_ADMIN_DSN = os.environ.get("HERALD_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_HOST = "127.0.0.1"


def sqlalchemy_url(db_name: str) -> str:
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{db_name}"


def admin_exec(sql: str) -> None:
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def template_db() -> Iterator[str]:
    """A database migrated once with Alembic; each test stack clones it (CREATE DATABASE ... TEMPLATE)."""
    from shared.migrate import upgrade

    name = f"herald_tpl_{uuid.uuid4().hex[:8]}"
    admin_exec(f'CREATE DATABASE "{name}"')
    try:
        upgrade(sqlalchemy_url(name))
        yield name
    finally:
        admin_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def fresh_db(template_db: str) -> Iterator[str]:
    name = f"herald_t_{uuid.uuid4().hex[:10]}"
    admin_exec(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    try:
        yield sqlalchemy_url(name)
    finally:
        admin_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
