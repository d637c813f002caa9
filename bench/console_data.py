"""A console-sized database in seconds: events, their deliveries and attempts, dead letters, incidents, things.

Filled with `INSERT ... SELECT generate_series` (no row goes through Python), for bench/console.py (100k
deliveries, 10k dead letters) and tests/integration/test_list_indexes.py (enough rows for the planner to
prefer an index). Ids are md5-derived UUIDs, so a row's id is a function of its number. Also what both then
do with the filled database: record the statements the query layer sends (`recorded`), to EXPLAIN them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

DEAD_REASONS = ("retries_exhausted", "auth_failed", "target_gone", "invalid_payload", "internal_error")


@dataclass(frozen=True)
class Shape:
    events: int = 50_000
    #: each event is delivered to this many integrations (deliveries = events x this)
    fanout: int = 2
    #: every n-th delivery is dead (100k deliveries / 10 = 10k dead letters)
    dead_every: int = 10
    attempts_per_dead: int = 3
    incidents: int = 5_000
    things: int = 1_000
    projects: int = 20


def fill(conn: psycopg.Connection, integration_ids: Sequence[uuid.UUID], shape: Shape) -> None:
    """Insert the rows (the integrations exist already) and ANALYZE, in one transaction."""
    n_int = len(integration_ids)
    ids = [str(i) for i in integration_ids]
    with conn.transaction():
        conn.execute(
            """
            INSERT INTO event (id, kind, type, project, environment, severity, payload, idempotency_key,
                               request_hash, lifecycle_key, created_at, fanned_out_at, next_fanout_at)
            SELECT md5('e' || i)::uuid, 'release',
                   (ARRAY['release.created', 'release.promoted', 'release.rollout_changed'])[1 + mod(i, 3)],
                   'proj-' || (mod(i, %(projects)s)), (ARRAY['prod', 'stage'])[1 + mod(i, 2)], 'info',
                   jsonb_build_object('project', 'proj-' || (mod(i, %(projects)s)), 'version', '1.0.' || i),
                   'op-' || i, md5('r' || i), 'release:proj-' || (mod(i, %(projects)s)) || ':1.0.' || i,
                   now() - make_interval(secs => i * 2), now() - make_interval(secs => i * 2),
                   now() - make_interval(secs => i * 2)
            FROM generate_series(1, %(events)s) AS i
            """,
            {"events": shape.events, "projects": shape.projects},
        )
        # Delivery k of event i goes to integration (i + k) mod n; every dead_every-th delivery is dead; the
        # attempts are made in the same statement, for the deliveries it inserted only.
        conn.execute(
            """
            WITH d AS (
            INSERT INTO delivery (id, event_id, integration_id, state, attempt_count, next_attempt_at,
                                  last_error_class, last_error_detail, dead_reason, created_at, updated_at,
                                  delivered_at)
            SELECT md5('d' || i || ':' || k)::uuid, md5('e' || i)::uuid,
                   (%(ids)s::uuid[])[1 + mod(i + k, %(n_int)s)],
                   CASE WHEN mod(i * %(fanout)s + k, %(dead_every)s) = 0 THEN 'dead' ELSE 'delivered' END,
                   CASE WHEN mod(i * %(fanout)s + k, %(dead_every)s) = 0 THEN %(apd)s ELSE 1 END,
                   now() - make_interval(secs => i * 2),
                   CASE WHEN mod(i * %(fanout)s + k, %(dead_every)s) = 0 THEN 'ProviderUnavailable' END,
                   CASE WHEN mod(i * %(fanout)s + k, %(dead_every)s) = 0 THEN 'HTTP 503 from the vendor' END,
                   CASE WHEN mod(i * %(fanout)s + k, %(dead_every)s) = 0
                        THEN (%(reasons)s::text[])[1 + mod(i, %(n_reasons)s)] END,
                   now() - make_interval(secs => i * 2), now() - make_interval(secs => i * 2 - 1),
                   CASE WHEN mod(i * %(fanout)s + k, %(dead_every)s) <> 0
                        THEN now() - make_interval(secs => i * 2 - 1) END
            FROM generate_series(1, %(events)s) AS i, generate_series(0, %(fanout)s - 1) AS k
            RETURNING id, state, attempt_count, created_at
            )
            INSERT INTO attempt (delivery_id, attempt_no, redrives_ago, started_at, duration_ms, outcome,
                                 status_code, error_class, response_excerpt)
            SELECT d.id, a, 0, d.created_at + make_interval(secs => a), 40 + a * 3,
                   CASE WHEN d.state = 'delivered' THEN 'delivered'
                        WHEN a = d.attempt_count THEN 'dead' ELSE 'retrying' END,
                   CASE WHEN d.state = 'delivered' THEN 200 ELSE 503 END,
                   CASE WHEN d.state = 'delivered' THEN NULL ELSE 'ProviderUnavailable' END,
                   CASE WHEN d.state = 'delivered' THEN NULL ELSE '{"error": "unavailable"}' END
            FROM d, generate_series(1, d.attempt_count) AS a
            """,
            {
                "ids": ids,
                "n_int": n_int,
                "fanout": shape.fanout,
                "dead_every": shape.dead_every,
                "apd": shape.attempts_per_dead,
                "reasons": list(DEAD_REASONS),
                "n_reasons": len(DEAD_REASONS),
                "events": shape.events,
            },
        )
        for kind, count, open_state, closed_state in (
            ("incident", shape.incidents, "open", "closed"),
            ("thing", shape.things, "active", "archived"),
        ):
            conn.execute(
                """
                INSERT INTO gateway_lifecycle (id, kind, object_id, channel_id, project, title, status,
                                               message, severity, state, is_open, attrs, details,
                                               started_at, last_event_time, last_sequence, created_at,
                                               updated_at)
                SELECT md5(%(kind)s || i)::uuid, %(kind)s, md5('o' || %(kind)s || i), 'chan-' || (mod(i, 5)),
                       'proj-' || (mod(i, %(projects)s)), %(kind)s || ' ' || i, 'ongoing', 'replica lag',
                       (ARRAY['critical', 'high', 'normal', 'low'])[1 + mod(i, 4)],
                       CASE WHEN mod(i, 3) = 0 THEN %(closed)s ELSE %(open)s END, mod(i, 3) <> 0, '{}', '{}',
                       now() - make_interval(secs => i * 7), now() - make_interval(secs => i * 7), 1,
                       now() - make_interval(secs => i * 7), now() - make_interval(secs => i * 7)
                FROM generate_series(1, %(count)s) AS i
                """,
                {
                    "kind": kind,
                    "count": count,
                    "projects": shape.projects,
                    "open": open_state,
                    "closed": closed_state,
                },
            )
    for table in ("event", "delivery", "attempt", "gateway_lifecycle"):
        conn.execute(f"ANALYZE {table}")


def recorded(engine: Engine, run: Callable[[Session], Any]) -> list[tuple[str, Any]]:
    """The statements (with their parameters) that `run` sends through a session on `engine`, in order."""
    statements: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        with sessionmaker(engine)() as session:
            run(session)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    return statements
