"""On a filled database (bench/prefill.py: 100,000 deliveries, 200,000 attempts, ANALYZEd), every query of the
hot path (claim, outcomes, the lifecycle gate, the sweeper's looks, parking's waits) and of the list pages (dead
letters, an integration's deliveries, their attempts) can read through an index: EXPLAIN shows no sequential
scan of `delivery`, `attempt` or `event`. A query that loses its index stays correct but grows with the tables.
bench/run.py --prefill runs the end-to-end phase on a million deliveries to show the figures stay flat."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from psycopg import sql as psycopg_sql
from sqlalchemy import create_engine, desc, event, select, text, tuple_
from sqlalchemy.engine import Connection

from bench.prefill import prefill
from shared import deliveries, delivery_lifecycles
from shared.db.models import Attempt, Delivery, Event, Integration
from shared.dead_letter_selection import DeadLetterFilter, conditions
from workers.claiming import DELIVER_CANDIDATES_SQL, DELIVER_EVENTS_SQL, INTEGRATIONS_SQL
from workers.tasks.fanout import INSERT_DELIVERIES_SQL, ROUTES_SQL, TAKE_EVENTS_SQL

pytestmark = pytest.mark.integration

BIG_TABLES = {"delivery", "attempt", "event"}


@pytest.fixture(scope="module")
def filled(template_db: str) -> Iterator[Connection]:
    from tests.conftest import admin_exec, sqlalchemy_url

    name = f"herald_t_{uuid.uuid4().hex[:10]}"
    admin_exec(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    url = sqlalchemy_url(name)
    try:
        prefill(url.replace("+psycopg", ""), 100_000)
        engine = create_engine(url)
        with engine.connect() as conn:
            yield conn
        engine.dispose()
    finally:
        admin_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def sample(conn: Connection, sql: str, n: int = 50) -> list[Any]:
    return [r[0] for r in conn.execute(text(sql), {"n": n})]


def full_scans(plan: dict[str, Any], partial: set[str]) -> list[str]:
    """Reads of a whole big table: a sequential scan, or an index walked end to end (no condition on it, and not
    a partial index, which holds only the rows its predicate selects)."""
    found = []
    relation = plan.get("Relation Name")
    if relation in BIG_TABLES:
        node = plan.get("Node Type")
        if node == "Seq Scan":
            found.append(relation)
        elif (
            node in ("Index Scan", "Index Only Scan")
            and "Index Cond" not in plan
            and plan.get("Index Name") not in partial
        ):
            found.append(f"{relation} (all of {plan.get('Index Name')})")
    for child in plan.get("Plans", []):
        found += full_scans(child, partial)
    return found


class _Captured(Exception):
    pass


def driver_sql(conn: Connection, statement: Any, params: dict[str, Any]) -> tuple[str, Any]:
    """What executing `statement` would send to psycopg (IN lists expanded, parameters converted), unsent."""
    captured: list[tuple[str, Any]] = []

    def grab(_conn: Any, _cursor: Any, sql: str, parameters: Any, _context: Any, _many: bool) -> None:
        captured.append((sql, parameters))
        raise _Captured

    event.listen(conn, "before_cursor_execute", grab)
    try:
        conn.execute(statement, params)
    except Exception:
        if not captured:
            raise
    finally:
        event.remove(conn, "before_cursor_execute", grab)
    return captured[0]


def explain(conn: Connection, statement: Any, params: dict[str, Any], partial: set[str]) -> list[str]:
    if conn.in_transaction():
        conn.rollback()
    with conn.begin():
        # At this size the planner may rightly scan a table whose index it would use at a million rows: scans
        # are priced out, so a sequential scan left in the plan means no index can serve the query at all.
        conn.execute(text("SET LOCAL enable_seqscan = off"))
        if hasattr(statement, "text"):  # a text() statement of ours
            [(plan,)] = conn.execute(text("EXPLAIN (FORMAT JSON) " + statement.text), params).all()
        else:  # a Core or ORM statement: EXPLAIN the SQL and parameters it hands the driver
            sql, values = driver_sql(conn, statement, params)
            [(plan,)] = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + sql, values).all()
    return full_scans(plan[0]["Plan"], partial)


def test_every_hot_path_and_list_page_query_uses_an_index(filled: Connection):
    conn = filled
    ids = sample(conn, "SELECT id FROM delivery ORDER BY random() LIMIT :n")
    event_ids = sample(conn, "SELECT id FROM event ORDER BY random() LIMIT :n")
    [integration_id] = sample(conn, "SELECT id FROM integration LIMIT :n", 1)
    keys = sample(conn, "SELECT lifecycle_key FROM delivery ORDER BY random() LIMIT :n")
    integration_ids = [integration_id] * len(keys)
    n = len(ids)
    now = datetime.now(UTC)
    outcome = {
        "ids": ids,
        "attempt_nos": [1] * n,
        "states": ["delivered"] * n,
        "delay_s": [None] * n,
        "error_classes": [None] * n,
        "error_details": [None] * n,
        "dead_reasons": [None] * n,
        "provider_refs": [None] * n,
        "progress": [None] * n,
        "paced": [0] * n,
        "started_at": [now] * n,
        "duration_ms": [50.0] * n,
        "status_codes": [200] * n,
        "excerpts": [None] * n,
    }
    groups = {"keys": keys, "integration_ids": integration_ids}
    cursor = (now, uuid.uuid4())
    queries: dict[str, tuple[Any, dict[str, Any]]] = {
        "claim": (deliveries.CLAIM_SQL, {"ids": ids, "lease_s": [30.0] * n, "disabled": "x"}),
        "outcomes": (deliveries.OUTCOME_SQL, outcome),
        "lost sends": (deliveries.LOST_SQL, {"limit": 500}),
        "lost applied": (
            deliveries.APPLY_LOST_SQL,
            {"ids": ids, "attempt_nos": [1] * n, "delay_s": [5.0] * n, "exhausted": "x", "lost": "y"},
        ),
        "outbox": (deliveries.OUTBOX_SQL, {"grace_s": 5.0, "late_s": 5.0, "limit": 500}),
        "due": (deliveries.DUE_SQL, {"requeue_after_s": 30.0, "limit": 500}),
        "wait": (deliveries.WAIT_SQL, {"ids": ids, "wait_s": [0.5] * n}),
        "wake waiting": (deliveries.WAKE_SQL, {"limit": 500}),
        "gate: groups of": (delivery_lifecycles.GROUP_OF_SQL, {"ids": ids}),
        "gate: groups": (delivery_lifecycles.GROUPS_SQL, groups),
        "gate: supersede": (
            delivery_lifecycles.SUPERSEDE_SQL,
            {"ids": ids, "reasons": ["r"] * n, "superseded": "superseded"},
        ),
        "gate: wait": (delivery_lifecycles.WAIT_SQL, {"ids": ids, "wait_s": 5.0}),
        "gate: set ref": (delivery_lifecycles.SET_REF_SQL, {"ids": ids, "refs": ["r"] * n}),
        "lifecycle wake": (delivery_lifecycles.WAKE_SQL, {**groups, "exclude": ids}),
        "fan-out insert": (
            INSERT_DELIVERIES_SQL,
            {
                "ids": [uuid.uuid4() for _ in range(n)],
                "event_ids": event_ids,
                "integration_ids": [integration_id] * n,
                "states": ["pending"] * n,
                "lifecycle_keys": [None] * n,
            },
        ),
        "deliver: rows": (DELIVER_CANDIDATES_SQL, {"ids": ids}),
        "deliver: events": (DELIVER_EVENTS_SQL, {"ids": event_ids}),
        "deliver and fan-out: integrations": (INTEGRATIONS_SQL, {"ids": integration_ids}),
        "fan-out: take events": (TAKE_EVENTS_SQL, {"event_ids": event_ids}),
        "fan-out: routes": (ROUTES_SQL, {"projects": ["history", "bench"]}),
        "dead letters page": (
            select(Delivery, Event.type, Event.project, Integration.name, Integration.provider)
            .join(Event, Event.id == Delivery.event_id)
            .join(Integration, Integration.id == Delivery.integration_id)
            .where(*conditions(DeadLetterFilter()))
            .where(tuple_(Delivery.updated_at, Delivery.id) < tuple_(*cursor))
            .order_by(desc(Delivery.updated_at), desc(Delivery.id))
            .limit(51),
            {},
        ),
        "dead letters of a project": (
            select(Delivery.id)
            .where(*conditions(DeadLetterFilter(project="history", reason="attempts_exhausted")))
            .order_by(desc(Delivery.updated_at))
            .limit(51),
            {},
        ),
        "an integration's deliveries page": (
            select(Delivery)
            .where(Delivery.integration_id == integration_id)
            .where(tuple_(Delivery.created_at, Delivery.id) < tuple_(*cursor))
            .order_by(desc(Delivery.created_at), desc(Delivery.id))
            .limit(21),
            {},
        ),
        "their attempts": (
            select(Attempt).where(Attempt.delivery_id.in_(ids[:20])).order_by(Attempt.redrives_ago),
            {},
        ),
        "an event's deliveries": (select(Delivery).where(Delivery.event_id == event_ids[0]), {}),
    }
    partial = set(
        sample(
            conn,
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indpred IS NOT NULL LIMIT :n",
            1000,
        )
    )
    scanned = {
        name: found for name, (q, params) in queries.items() if (found := explain(conn, q, params, partial))
    }
    assert scanned == {}, f"sequential scans of big tables: {scanned}"


def generic_plan_indexes(conn: Connection, statement: Any, params: dict[str, Any]) -> list[str]:
    """The indexes through which `delivery` is read in the generic plan of `statement` prepared with `params`
    as its parameters: the plan psycopg's prepared statements settle on after their first executions, made
    without the parameters' values (`plan_cache_mode = force_generic_plan` asks for it at once)."""
    names = list(params)
    sql = statement.text
    for n, name in enumerate(names, start=1):
        sql = sql.replace(f":{name}", f"${n}")
    raw = conn.connection.driver_connection
    assert raw is not None
    if conn.in_transaction():
        conn.rollback()
    with conn.begin():
        conn.execute(text("SET LOCAL plan_cache_mode = force_generic_plan"))
        conn.exec_driver_sql(f"PREPARE herald_generic AS {sql}")
        try:
            values = ", ".join(psycopg_sql.Literal(params[name]).as_string(raw) for name in names)
            [(plan,)] = conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) EXECUTE herald_generic({values})").all()
        finally:
            conn.exec_driver_sql("DEALLOCATE herald_generic")

    def walk(node: dict[str, Any]) -> list[str]:
        found = (
            [node["Index Name"]] if node.get("Relation Name") == "delivery" and "Index Name" in node else []
        )
        for child in node.get("Plans", []):
            found += walk(child)
        return found

    return walk(plan[0]["Plan"])


def test_the_lifecycle_wake_looks_up_each_group_in_its_generic_plan_too(filled: Connection):
    """Repro (before): prepared (as psycopg does after a few executions), the wake after every outcome write of
    a lifecycle read all the deliveries due later through delivery_due_idx, expecting 1 % of the retrying rows
    the table has, and matched its groups in a hash: on 1M deliveries with 10,000 retries scheduled each wake
    took 23 ms and `make bench --prefill` spent a second of PostgreSQL time on it. It must look each group up."""
    conn = filled
    [integration_id] = sample(conn, "SELECT id FROM integration LIMIT :n", 1)
    keys = [f"release:bench:prod:1.0.{i}" for i in range(3)]
    indexes = generic_plan_indexes(
        conn,
        delivery_lifecycles.WAKE_SQL,
        {"keys": keys, "integration_ids": [integration_id] * len(keys), "exclude": [uuid.uuid4()]},
    )
    assert "delivery_lifecycle_idx" in indexes and "delivery_due_idx" not in indexes, indexes
