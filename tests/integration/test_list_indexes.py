"""Every list query of the console and the JSON API is served by an index, on a table filled enough that the
planner would rather read the whole table if no index fitted (issue 14: "no query without an index").

The queries are the real ones: each listing function (api/queries/, api/routes/incidents.py) runs against
the filled database while a SQLAlchemy cursor hook records the statements it sends; each recorded statement
is then EXPLAINed (FORMAT JSON) with its own parameters, and no plan may hold a Seq Scan on a big table.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from api.deps import Principal
from api.queries.dead_letters import dead_letter_filter, dead_letter_page
from api.queries.deliveries import DeliveryQuery, delivery_page
from api.queries.events import EventQuery, event_page
from api.routes._common import encode_cursor
from api.routes.events import event_detail
from api.routes.incidents import lifecycle_detail, lifecycle_page
from bench.console_data import Shape, fill, recorded
from shared import deliveries as deadletters

BIG_TABLES = {"event", "delivery", "attempt", "gateway_lifecycle"}
SHAPE = Shape(events=20_000, incidents=3_000, things=1_000)
ADMIN = Principal("test", "test", frozenset({"admin"}), None)


@pytest.fixture(scope="module")
def filled(template_db: str) -> Iterator[tuple[Engine, list[uuid.UUID]]]:
    from tests.conftest import admin_exec, sqlalchemy_url

    name = f"herald_t_{uuid.uuid4().hex[:10]}"
    admin_exec(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    url = sqlalchemy_url(name)
    integration_ids = [uuid.uuid4() for _ in range(8)]
    try:
        with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
            for i, integration_id in enumerate(integration_ids):
                conn.execute(
                    "INSERT INTO integration (id, name, provider, config_ciphertext, config_key_id)"
                    " VALUES (%s, %s, 'webhook', '\\x00', 'k1')",
                    (integration_id, f"hook-{i}"),
                )
            fill(conn, integration_ids, SHAPE)
        engine = create_engine(url)
        yield engine, integration_ids
        engine.dispose()
    finally:
        admin_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _seq_scans(plan: dict[str, Any]) -> list[str]:
    found = []
    if plan.get("Node Type") == "Seq Scan" and plan.get("Relation Name") in BIG_TABLES:
        found.append(str(plan["Relation Name"]))
    for child in plan.get("Plans", []):
        found.extend(_seq_scans(child))
    return found


def _index_conds(plan: dict[str, Any]) -> list[str]:
    found = [str(plan["Index Cond"])] if "Index Cond" in plan else []
    for child in plan.get("Plans", []):
        found.extend(_index_conds(child))
    return found


def _assert_indexed(
    engine: Engine, run: Callable[[Session], Any], *, cursor_column: str | None = None
) -> None:
    """No Seq Scan on a big table in any statement `run` sends; with `cursor_column`, the page's first
    statement seeks to the cursor inside the index (an Index Cond on it), rather than reading the index from
    the top and filtering out every row before the cursor (a deep page would cost its depth)."""
    statements = recorded(engine, run)
    assert statements, "the listing sent no statement"
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        for statement, parameters in statements:
            cur.execute("EXPLAIN (FORMAT JSON) " + statement, parameters)
            [[doc]] = cur.fetchall()
            plan = doc[0]["Plan"]
            assert not _seq_scans(plan), f"sequential scan in:\n{statement}\nplan: {plan}"
            if cursor_column is not None and statement is statements[0][0]:
                conds = _index_conds(plan)
                assert any(cursor_column in c for c in conds), f"cursor not in the index scan: {plan}"
    finally:
        raw.close()


def _cursor_at(engine: Engine, sql: str) -> str:
    """A deep page's cursor: the (timestamp, id) of the row `sql` picks (OFFSET far into the table)."""
    with engine.connect() as conn:
        ts, row_id = conn.execute(text(sql)).one()
    return encode_cursor(ts, row_id)


def test_event_listings_use_indexes(filled: tuple[Engine, list[uuid.UUID]]) -> None:
    engine, _ = filled
    deep = _cursor_at(
        engine, "SELECT created_at, id FROM event ORDER BY created_at DESC, id DESC OFFSET 15000 LIMIT 1"
    )
    for q, cursor in (
        (EventQuery(), None),
        (EventQuery(), deep),
        (EventQuery(project="proj-3"), None),
        (EventQuery(project="proj-3"), deep),
        (EventQuery(project="proj-3", type="release.promoted"), None),
        (EventQuery(text="release:proj-7:1.0.7"), None),
        (EventQuery(text=str(uuid.uuid4())), None),
        (EventQuery(project="proj-7", text="op-7"), None),
        (EventQuery(since=datetime.now(UTC) - timedelta(hours=1)), None),
    ):
        _assert_indexed(
            engine,
            lambda s, q=q, c=cursor: event_page(s, q, limit=50, cursor=c),
            cursor_column="created_at" if cursor else None,
        )


def test_event_timeline_uses_indexes(filled: tuple[Engine, list[uuid.UUID]]) -> None:
    engine, _ = filled
    with engine.connect() as conn:
        event_id = conn.execute(
            text("SELECT event_id FROM delivery WHERE state = 'dead' ORDER BY created_at LIMIT 1")
        ).scalar_one()
    _assert_indexed(engine, lambda s: event_detail(s, ADMIN, event_id))


def test_delivery_listings_use_indexes(filled: tuple[Engine, list[uuid.UUID]]) -> None:
    engine, integration_ids = filled
    deep = _cursor_at(
        engine, "SELECT created_at, id FROM delivery ORDER BY created_at DESC, id DESC OFFSET 30000 LIMIT 1"
    )
    for q, cursor in (
        (DeliveryQuery(), None),
        (DeliveryQuery(), deep),
        (DeliveryQuery(integration_id=integration_ids[2]), None),
        (DeliveryQuery(integration_id=integration_ids[2]), deep),
        (DeliveryQuery(integration_id=integration_ids[2], state="dead"), None),
        (DeliveryQuery(state="dead"), None),
        (DeliveryQuery(state="dead"), deep),
        (DeliveryQuery(project="proj-4"), None),
    ):
        _assert_indexed(
            engine,
            lambda s, q=q, c=cursor: delivery_page(s, q, limit=50, cursor=c),
            cursor_column="created_at" if cursor else None,
        )


def test_dead_letter_listings_use_indexes(filled: tuple[Engine, list[uuid.UUID]]) -> None:
    engine, integration_ids = filled
    deep = _cursor_at(
        engine,
        "SELECT updated_at, id FROM delivery WHERE state = 'dead' ORDER BY updated_at DESC, id DESC OFFSET 3000 LIMIT 1",
    )
    now = datetime.now(UTC)
    for flt, cursor in (
        (dead_letter_filter(), None),
        (dead_letter_filter(), deep),
        (dead_letter_filter(integration_id=integration_ids[1]), None),
        (dead_letter_filter(integration_id=integration_ids[1]), deep),
        (dead_letter_filter(reason="auth_failed"), None),
        (dead_letter_filter(project="proj-2"), None),
        (dead_letter_filter(since=now - timedelta(hours=2), until=now - timedelta(hours=1)), None),
        (dead_letter_filter(states=("dead", "skipped")), None),
    ):
        _assert_indexed(
            engine,
            lambda s, f=flt, c=cursor: dead_letter_page(s, f, limit=50, cursor=c),
            cursor_column="updated_at" if cursor else None,
        )
        _assert_indexed(engine, lambda s, f=flt: deadletters.count(s, f))


@pytest.mark.parametrize("kind", ["incident", "thing"])
def test_lifecycle_listings_use_indexes(filled: tuple[Engine, list[uuid.UUID]], kind: str) -> None:
    engine, _ = filled
    deep = _cursor_at(
        engine,
        f"SELECT created_at, id FROM gateway_lifecycle WHERE kind = '{kind}'"
        " ORDER BY created_at DESC, id DESC OFFSET 500 LIMIT 1",
    )
    for filters, cursor in (
        ({}, None),
        ({}, deep),
        ({"channel": "chan-2"}, None),
        ({"channel": "chan-2"}, deep),
        ({"project": "proj-5"}, None),
        ({"is_open": True}, deep),
        ({"severity": "critical"} if kind == "incident" else {}, None),
    ):
        args: dict[str, Any] = {"channel": None, "project": None, "is_open": None, "severity": None} | filters
        _assert_indexed(
            engine,
            lambda s, a=args, c=cursor: lifecycle_page(s, ADMIN, kind, **a, cursor=c, limit=50),
            cursor_column="created_at" if cursor else None,
        )
    with engine.connect() as conn:
        object_id = conn.execute(
            text("SELECT object_id FROM gateway_lifecycle WHERE kind = :k LIMIT 1"), {"k": kind}
        ).scalar_one()
    _assert_indexed(engine, lambda s: lifecycle_detail(s, ADMIN, kind, object_id))
