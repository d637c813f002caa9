"""The gateway store's SQL (api/gateway/store.py), kept apart so the store stays readable: the channel row,
the op_id claim and its answer, the lifecycle row lock/insert/update, and the one-statement create."""

from __future__ import annotations

CHANNEL_SQL = (
    "SELECT id, project, password_hash, version FROM channel WHERE id = %(id)s AND deleted_at IS NULL"
)
CLAIM_OP_SQL = """
INSERT INTO gateway_dispatch (id, channel_id, op_id, route, request_hash)
VALUES (%(id)s, %(channel_id)s, %(op_id)s, %(route)s, %(hash)s)
ON CONFLICT (channel_id, op_id) DO NOTHING
RETURNING id
"""
EXISTING_OP_SQL = """
SELECT route, request_hash, response FROM gateway_dispatch WHERE channel_id = %(channel_id)s AND op_id = %(op_id)s
"""
THING_STATE_SQL = """
SELECT state FROM gateway_lifecycle WHERE kind = 'thing' AND object_id = %(object_id)s AND channel_id = %(channel_id)s
"""
INSERT_LIFECYCLE_SQL = """
INSERT INTO gateway_lifecycle (id, kind, object_id, channel_id, project, title, description, status, message,
                               severity, state, is_open, attrs, details, started_at, ended_at, last_event_time,
                               last_sequence)
VALUES (%(id)s, %(kind)s, %(object_id)s, %(channel_id)s, %(project)s, %(title)s, %(description)s, %(status)s,
        %(message)s, %(severity)s, %(state)s, %(is_open)s, %(attrs)s, %(details)s, %(started_at)s,
        %(ended_at)s, %(last_event_time)s, 1)
"""
FINISH_OP_SQL = """
UPDATE gateway_dispatch SET lifecycle_id = %(lifecycle_id)s, sequence = %(sequence)s,
       event_row_id = %(event_row_id)s, event_time = %(event_time)s, response = %(response)s
WHERE id = %(id)s
"""

# One statement for a create: the claim carries the op's final answer (ids are made by the caller), and the
# lifecycle and event rows are inserted only if the claim was (`FROM claim`). An event key already taken (an
# event older than this op's dispatch row) claims nothing, as a conflict does: the general path answers both.
CLAIM_CREATE_SQL = """
WITH claim AS (
    INSERT INTO gateway_dispatch (id, channel_id, op_id, route, request_hash, lifecycle_id, sequence,
                                  event_row_id, event_time, response)
    SELECT CAST(%(dispatch_id)s AS uuid), %(channel_id)s, %(op_id)s, %(route)s, %(hash)s,
           CAST(%(lifecycle_id)s AS uuid), 1, CAST(%(event_id)s AS uuid), CAST(%(event_time)s AS timestamptz),
           CAST(%(response)s AS jsonb)
     WHERE NOT EXISTS (SELECT 1 FROM event WHERE project = %(project)s AND idempotency_key = %(key)s)
    ON CONFLICT (channel_id, op_id) DO NOTHING
    RETURNING id
)"""
CREATE_LIFECYCLE_CTE = """, lifecycle AS (
    INSERT INTO gateway_lifecycle (id, kind, object_id, channel_id, project, title, description, status, message,
                                   severity, state, is_open, attrs, details, started_at, ended_at,
                                   last_event_time, last_sequence)
    SELECT CAST(%(lifecycle_id)s AS uuid), %(lifecycle_kind)s, %(object_id)s, %(channel_id)s, %(project)s,
           %(title)s, %(description)s, %(status)s, %(message)s, %(severity_shown)s, %(state)s,
           CAST(%(is_open)s AS boolean), CAST(%(attrs)s AS jsonb), CAST(%(details)s AS jsonb),
           CAST(%(started_at)s AS timestamptz), CAST(%(ended_at)s AS timestamptz),
           CAST(%(last_event_time)s AS timestamptz), 1
      FROM claim
)"""
CREATE_EVENT_CTE = """, ev AS (
    INSERT INTO event (id, kind, type, project, environment, severity, payload, idempotency_key, request_hash,
                       lifecycle_key, created_at, next_fanout_at)
    SELECT CAST(%(event_id)s AS uuid), %(kind)s, %(type)s, %(project)s, NULL, %(severity)s,
           CAST(%(payload)s AS jsonb), %(key)s, %(event_hash)s, %(lifecycle_key)s, now(),
           now() + make_interval(secs => %(grace_s)s)
      FROM claim
    RETURNING id
)
SELECT id FROM ev"""
CREATE_MESSAGE_SQL = CLAIM_CREATE_SQL + CREATE_EVENT_CTE
CREATE_LIFECYCLE_SQL = CLAIM_CREATE_SQL + CREATE_LIFECYCLE_CTE + CREATE_EVENT_CTE
#: routes that create (no earlier row to lock): the one-statement path
CREATE_ROUTES = frozenset({"/message", "/event/create", "/thing/create"})

# An update, close, archive or delete: the claim and the lifecycle row's lock in one statement (the row is
# locked whether or not the op is new: a replay then answers from gateway_dispatch; no lock order changes,
# both wait only on the transaction holding the row).
CLAIM_AND_LOCK_SQL = """
WITH claim AS (
    INSERT INTO gateway_dispatch (id, channel_id, op_id, route, request_hash)
    VALUES (%(id)s, %(channel_id)s, %(op_id)s, %(route)s, %(hash)s)
    ON CONFLICT (channel_id, op_id) DO NOTHING
    RETURNING id
)
SELECT (SELECT id FROM claim), l.id, l.details, l.last_sequence
  FROM (SELECT 1) AS one
  LEFT JOIN LATERAL (
      SELECT id, details, last_sequence FROM gateway_lifecycle
       WHERE kind = %(kind)s AND object_id = %(object_id)s AND channel_id = %(channel_id)s
       FOR UPDATE
  ) AS l ON true
"""
# ... then the lifecycle's new state, its event and the op's answer in one statement.
STEP_WRITE_SQL = """
WITH lifecycle AS (
    UPDATE gateway_lifecycle SET title = %(title)s, description = %(description)s, status = %(status)s,
           message = %(message)s, severity = %(severity_shown)s, state = %(state)s, is_open = %(is_open)s,
           attrs = %(attrs)s, details = %(details)s, started_at = %(started_at)s, ended_at = %(ended_at)s,
           last_event_time = %(last_event_time)s, last_sequence = %(sequence)s, updated_at = now()
     WHERE id = %(id)s
), ev AS (
    INSERT INTO event (id, kind, type, project, environment, severity, payload, idempotency_key, request_hash,
                       lifecycle_key, created_at, next_fanout_at)
    VALUES (%(event_id)s, %(kind)s, %(type)s, %(project)s, NULL, %(severity)s, %(payload)s, %(key)s,
            %(event_hash)s, %(lifecycle_key)s, now(), now() + make_interval(secs => %(grace_s)s))
    ON CONFLICT (project, idempotency_key) DO NOTHING
    RETURNING id
), answer AS (
    UPDATE gateway_dispatch SET lifecycle_id = %(id)s, sequence = %(sequence)s, event_row_id = (SELECT id FROM ev),
           event_time = %(event_time)s, response = %(response)s
     WHERE id = %(dispatch_id)s
)
SELECT (SELECT id FROM ev)
"""
