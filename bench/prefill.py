"""Fill a Herald database with history: events, deliveries (mostly delivered, some dead, skipped, retrying) and
their attempts, loaded with COPY, then VACUUM ANALYZE.

Used by the scale phase of bench/run.py (`--prefill 1000000`: a million deliveries and two million attempts
before the end-to-end phase, whose figures are then compared with the empty database's) and by the query-plan
test (tests/integration/test_query_plans.py), which checks on a filled table that every hot-path and list-page
query uses an index.

The load follows PostgreSQL's own advice for populating a database: in one transaction, drop the indexes and
constraints of the three big tables, COPY the rows, then build the indexes and add the constraints back (their
definitions read from the catalog, so the schema after the fill is the migrated one as pg_dump would restore
it, and adding them back checks every row). Building an index once is several times cheaper than maintaining
it row by row: the INSERT ... SELECT version this replaced took 90 s for a million deliveries (this one 24 s),
almost all of it index upkeep.
The three tables are locked for the whole load, so a running worker waits rather than sees them half built.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import sql

#: integrations the history is spread over (none of them routed: the run's own integration is separate)
HISTORY_INTEGRATIONS = 50
BIG_TABLES = ("event", "delivery", "attempt")
#: rows per COPY write: big enough that the per-call cost vanishes, small enough to stay a few MB
_ROWS_PER_WRITE = 20_000

_INTEGRATIONS_SQL = """
INSERT INTO integration (id, name, provider, project, config_ciphertext, config_key_id, enabled)
SELECT gen_random_uuid(), 'history-' || n, 'webhook', 'history', '\\x00'::bytea, 'none', true
  FROM generate_series(1, %(n)s) AS n
RETURNING id
"""

_CONSTRAINTS_SQL = """
SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid), contype
  FROM pg_constraint
 WHERE contype IN ('p', 'u', 'f')
   AND (conrelid = ANY(%(tables)s::regclass[]) OR confrelid = ANY(%(tables)s::regclass[]))
"""

# Indexes that no constraint owns (a constraint's index goes and comes back with the constraint).
_INDEXES_SQL = """
SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid)
  FROM pg_index
 WHERE indrelid = ANY(%(tables)s::regclass[])
   AND NOT EXISTS (SELECT 1 FROM pg_constraint c
                    WHERE c.conindid = pg_index.indexrelid AND c.contype IN ('p', 'u', 'x'))
"""


def _state(n: int) -> str:
    share = n % 100
    if share < 94:
        return "delivered"
    if share < 97:
        return "dead"
    if share < 99:
        return "skipped"
    return "retrying"


def _chunks(lines: Iterator[str]) -> Iterator[str]:
    batch: list[str] = []
    for line in lines:
        batch.append(line)
        if len(batch) == _ROWS_PER_WRITE:
            yield "".join(batch)
            batch.clear()
    if batch:
        yield "".join(batch)


class _History:
    """The rows, derived from the event number n (1-based), so each table's COPY regenerates its share."""

    def __init__(self, events: int, integrations: list[str], attempts_per_delivery: int) -> None:
        rng = random.Random()
        # uuid text without hyphens is valid input; 128 random bits is what the bench needs of an id
        self.event_ids = [f"{rng.getrandbits(128):032x}" for _ in range(events)]
        self.delivery_ids = [f"{rng.getrandbits(128):032x}" for _ in range(2 * events)]
        self.integrations = integrations
        self.per = attempts_per_delivery
        now = datetime.now(UTC)
        # one timestamp per second of history, oldest last, as text once
        self.created = [(now - timedelta(seconds=n)).isoformat() for n in range(events + 1)]
        # History's retrying rows are due tomorrow: due now, the sweeper would hand thousands of them (to
        # integrations with no usable config) to the workers during the phase that is being measured.
        self.retry_at = (now + timedelta(days=1)).isoformat()

    def events(self) -> Iterator[str]:
        for i, event_id in enumerate(self.event_ids):
            n = i + 1
            at = self.created[n]
            payload = (
                '{"type": "release.created", "project": "history", "environment": "prod", '
                f'"version": "0.{n}"}}'
            )
            yield (
                f"{event_id}\trelease\trelease.created\thistory\tprod\tinfo\t{payload}\thistory-{n}\t"
                f"{n:032x}\trelease:history:0.{n}\t{at}\t{at}\t{at}\n"
            )

    def deliveries(self) -> Iterator[str]:
        count = len(self.integrations)
        for i, event_id in enumerate(self.event_ids):
            n = i + 1
            at = self.created[n]
            state = _state(n)
            error = "\\N" if state == "delivered" else "provider_unavailable"
            dead = "attempts_exhausted" if state == "dead" else "\\N"
            delivered = at if state == "delivered" else "\\N"
            due = self.retry_at if state == "retrying" else at
            for k in (0, 1):
                yield (
                    f"{self.delivery_ids[2 * i + k]}\t{event_id}\t{self.integrations[(n + k) % count]}\t"
                    f"{state}\t2\t{due}\t{error}\t{dead}\trelease:history:0.{n}\t{at}\t{at}\t{delivered}\n"
                )

    def attempts(self) -> Iterator[str]:
        for i in range(len(self.event_ids)):
            n = i + 1
            at = self.created[n]
            state = _state(n)
            for k in (0, 1):
                delivery_id = self.delivery_ids[2 * i + k]
                for no in range(1, self.per + 1):
                    last = no == self.per
                    outcome = state if last else "retrying"
                    code = 200 if last and state == "delivered" else 503
                    error = "\\N" if last and state == "delivered" else "provider_unavailable"
                    yield f"{delivery_id}\t{no}\t{at}\t50\t{outcome}\t{code}\t{error}\n"


_COPIES = (
    (
        "events",
        "COPY event (id, kind, type, project, environment, severity, payload, idempotency_key, request_hash, "
        "lifecycle_key, created_at, fanned_out_at, next_fanout_at) FROM STDIN",
        _History.events,
    ),
    (
        "deliveries",
        "COPY delivery (id, event_id, integration_id, state, attempt_count, next_attempt_at, last_error_class, "
        "dead_reason, lifecycle_key, created_at, updated_at, delivered_at) FROM STDIN",
        _History.deliveries,
    ),
    (
        "attempts",
        "COPY attempt (delivery_id, attempt_no, started_at, duration_ms, outcome, status_code, error_class) "
        "FROM STDIN",
        _History.attempts,
    ),
)


def prefill(libpq_url: str, deliveries: int, attempts_per_delivery: int = 2) -> dict[str, float]:
    """Add `deliveries` history deliveries (and `attempts_per_delivery` attempts each); return the timings."""
    timings: dict[str, float] = {}
    tables = list(BIG_TABLES)
    with psycopg.connect(libpq_url) as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET maintenance_work_mem = '512MB'")
        conn.execute(
            sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
                sql.SQL(", ").join(map(sql.Identifier, tables))
            )
        )
        t0 = time.perf_counter()
        constraints = conn.execute(_CONSTRAINTS_SQL, {"tables": tables}).fetchall()
        indexes = conn.execute(_INDEXES_SQL, {"tables": tables}).fetchall()
        # foreign keys first: they hang on the primary and unique keys dropped next
        constraints.sort(key=lambda c: c[3] != "f")
        for table, name, _definition, _kind in constraints:
            conn.execute(
                sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(sql.SQL(table), sql.Identifier(name))
            )
        for index, _definition in indexes:
            conn.execute(sql.SQL("DROP INDEX {}").format(sql.SQL(index)))
        integrations = [str(r[0]) for r in conn.execute(_INTEGRATIONS_SQL, {"n": HISTORY_INTEGRATIONS})]
        integrations.sort()
        history = _History(max(deliveries // 2, 1), integrations, attempts_per_delivery)
        timings["prefill_generate_s"] = time.perf_counter() - t0
        for name, copy_sql, rows in _COPIES:
            t0 = time.perf_counter()
            with conn.cursor().copy(copy_sql) as copy:
                for chunk in _chunks(rows(history)):
                    copy.write(chunk)
            timings[f"prefill_{name}_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _index, definition in indexes:
            conn.execute(definition)
        # keys before the foreign keys that need them
        for table, name, definition, _kind in reversed(constraints):
            conn.execute(
                sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                    sql.SQL(table), sql.Identifier(name), sql.SQL(definition)
                )
            )
        timings["prefill_indexes_s"] = time.perf_counter() - t0
        conn.commit()
    with psycopg.connect(libpq_url, autocommit=True) as conn:
        t0 = time.perf_counter()
        conn.execute("VACUUM ANALYZE")
        timings["prefill_analyze_s"] = time.perf_counter() - t0
        # The load leaves a gigabyte of dirty pages; written out now, not by the checkpointer during the phase
        # that is measured next.
        t0 = time.perf_counter()
        conn.execute("CHECKPOINT")
        timings["prefill_checkpoint_s"] = time.perf_counter() - t0
    return timings
