"""Fill a Herald database with history: events, deliveries (mostly delivered, some dead, skipped, retrying) and
their attempts, generated inside PostgreSQL (`generate_series`, no rows through Python), then ANALYZE.

Used by the scale phase of bench/run.py (`--prefill 1000000`: a million deliveries and two million attempts
before the end-to-end phase, whose figures are then compared with the empty database's) and by the query-plan
test (tests/integration/test_query_plans.py), which checks on a filled table that every hot-path and list-page
query uses an index.
"""

from __future__ import annotations

import time

import psycopg

#: integrations the history is spread over (none of them routed: the run's own integration is separate)
HISTORY_INTEGRATIONS = 50

_INTEGRATIONS_SQL = """
INSERT INTO integration (id, name, provider, project, config_ciphertext, config_key_id, enabled)
SELECT gen_random_uuid(), 'history-' || n, 'webhook', 'history', '\\x00'::bytea, 'none', true
  FROM generate_series(1, %(n)s) AS n
"""

_EVENTS_SQL = """
INSERT INTO event (id, kind, type, project, environment, severity, payload, idempotency_key, request_hash,
                   lifecycle_key, created_at, fanned_out_at, next_fanout_at)
SELECT gen_random_uuid(), 'release', 'release.created', 'history', 'prod', 'info',
       jsonb_build_object('type', 'release.created', 'project', 'history', 'environment', 'prod',
                          'version', '0.' || n),
       'history-' || n, md5(n::text), 'release:history:0.' || n,
       now() - make_interval(secs => n), now() - make_interval(secs => n), now() - make_interval(secs => n)
  FROM generate_series(1, %(n)s) AS n
"""

# Two deliveries per event (two integrations each), states in realistic shares.
_DELIVERIES_SQL = """
WITH ids AS (SELECT array_agg(id ORDER BY id) AS a FROM integration WHERE project = 'history'),
     e AS (SELECT id, created_at, lifecycle_key, row_number() OVER () AS n FROM event WHERE project = 'history')
INSERT INTO delivery (id, event_id, integration_id, state, attempt_count, next_attempt_at, last_error_class,
                      dead_reason, lifecycle_key, created_at, updated_at, delivered_at)
SELECT gen_random_uuid(), e.id, ids.a[1 + (e.n + k) %% %(integrations)s], s.state, 2, e.created_at,
       CASE WHEN s.state <> 'delivered' THEN 'provider_unavailable' END,
       CASE WHEN s.state = 'dead' THEN 'attempts_exhausted' END,
       e.lifecycle_key, e.created_at, e.created_at,
       CASE WHEN s.state = 'delivered' THEN e.created_at END
  FROM e CROSS JOIN ids CROSS JOIN generate_series(0, 1) AS k
  CROSS JOIN LATERAL (
        SELECT CASE WHEN e.n %% 100 < 94 THEN 'delivered' WHEN e.n %% 100 < 97 THEN 'dead'
                    WHEN e.n %% 100 < 99 THEN 'skipped' ELSE 'retrying' END AS state) s
"""

_ATTEMPTS_SQL = """
INSERT INTO attempt (delivery_id, attempt_no, started_at, duration_ms, outcome, status_code, error_class)
SELECT d.id, a.no, d.created_at, 50, CASE WHEN a.no = 2 THEN d.state ELSE 'retrying' END,
       CASE WHEN a.no = 2 AND d.state = 'delivered' THEN 200 ELSE 503 END,
       CASE WHEN a.no = 1 OR d.state <> 'delivered' THEN 'provider_unavailable' END
  FROM delivery d CROSS JOIN generate_series(1, %(per)s) AS a(no)
 WHERE d.integration_id IN (SELECT id FROM integration WHERE project = 'history')
"""


def prefill(libpq_url: str, deliveries: int, attempts_per_delivery: int = 2) -> dict[str, float]:
    """Add `deliveries` history deliveries (and `attempts_per_delivery` attempts each); return the timings."""
    timings: dict[str, float] = {}
    with psycopg.connect(libpq_url, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        for name, sql, params in (
            ("integrations", _INTEGRATIONS_SQL, {"n": HISTORY_INTEGRATIONS}),
            ("events", _EVENTS_SQL, {"n": max(deliveries // 2, 1)}),
            ("deliveries", _DELIVERIES_SQL, {"integrations": HISTORY_INTEGRATIONS}),
            ("attempts", _ATTEMPTS_SQL, {"per": attempts_per_delivery}),
        ):
            t0 = time.perf_counter()
            conn.execute(sql, params)
            timings[f"prefill_{name}_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        conn.execute("VACUUM ANALYZE")
        timings["prefill_analyze_s"] = time.perf_counter() - t0
    return timings
