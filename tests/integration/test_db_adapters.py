"""shared/db/adapters.py on Herald's own engine: uuid arrays go in binary, every other list as before, and the
values PostgreSQL sees are the same either way."""

from __future__ import annotations

import uuid

from psycopg.adapt import PyFormat, Transformer
from psycopg.pq import Format
from sqlalchemy import any_, literal_column, select, text

from shared.config import Settings
from shared.db.session import make_engine
from shared.db.sql import uuid_array_param
from tests.conftest import sqlalchemy_url


def _engine():
    return make_engine(Settings(database_url=sqlalchemy_url("postgres")), pool_size=1)


def test_uuid_lists_are_dumped_in_binary_and_other_lists_as_before():
    engine = _engine()
    try:
        with engine.connect() as conn:
            raw = conn.connection.dbapi_connection
            tx = Transformer(raw)
            ids = [uuid.uuid4() for _ in range(3)]
            assert tx.get_dumper(ids, PyFormat.AUTO).format == Format.BINARY
            assert tx.get_dumper([None, ids[0]], PyFormat.AUTO).format == Format.BINARY
            assert tx.get_dumper(["a", "b"], PyFormat.AUTO).format == Format.TEXT
            assert tx.get_dumper([1, 2], PyFormat.AUTO).format == Format.TEXT
    finally:
        engine.dispose()


def test_uuid_arrays_reach_postgresql_unchanged():
    engine = _engine()
    ids = [uuid.uuid4() for _ in range(1000)]
    try:
        with engine.connect() as conn:
            # text() with a cast, as the hot paths' INSERT and claim statements pass them
            row = conn.execute(
                text("SELECT CAST(:ids AS uuid[]), CAST(:holes AS uuid[]), CAST(:none AS uuid[])"),
                {"ids": ids, "holes": [None, ids[1], None], "none": []},
            ).one()
            assert list(row) == [ids, [None, ids[1], None], []]
            # a typed bindparam (shared/db/sql.py) inside ANY(), unnest beside a text array
            probe = select(literal_column("1")).where(
                literal_column(f"'{ids[500]}'::uuid") == any_(uuid_array_param("ids"))
            )
            assert conn.execute(probe, {"ids": ids}).scalar() == 1
            pairs = conn.execute(
                text(
                    "SELECT u.id, u.state FROM unnest(CAST(:ids AS uuid[]), CAST(:states AS text[])) AS u(id, state)"
                ),
                {"ids": ids[:2], "states": ["pending", 'with "quotes", {braces}']},
            ).all()
            assert [tuple(p) for p in pairs] == [(ids[0], "pending"), (ids[1], 'with "quotes", {braces}')]
    finally:
        engine.dispose()
