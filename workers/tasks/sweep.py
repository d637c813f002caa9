"""The sweeper (Celery beat, every `sweep_interval_s`): PostgreSQL is the truth, Redis only the transport.

Each run, in this order:
1. lost sends: deliveries still `sending` past their lease (the worker died mid-send) go back to `retrying`,
   due now, with a `lost` attempt row, or to `dead` when that used up their attempts;
2. the outbox: events not fanned out by `next_fanout_at` get `fanout` published again;
3. due work: `pending`/`retrying` deliveries whose `next_attempt_at` has come and that are not already on Redis
   (or were published more than `requeue_after_s` ago and never claimed) are published in `deliver` batches.

Every selection uses FOR UPDATE SKIP LOCKED and stamps the rows it takes, so two sweepers never double-publish
and a busy one does not block the other.
"""

from __future__ import annotations

import logging
import uuid

from celery import shared_task
from sqlalchemy import TextClause, text

from shared.errors import ATTEMPTS_EXHAUSTED
from shared.tasknames import TASK_SWEEP
from workers.publish import publish_deliver_batches, publish_fanout
from workers.runtime import ProcessRuntime, get_runtime

log = logging.getLogger(__name__)

# A sweep takes at most this many rounds of `sweep_batch_size` rows per step, so one run stays short and the
# next run carries on.
MAX_ROUNDS = 20

RECOVER_LOST_SQL = text(
    """
    WITH lost AS (
        SELECT d.id, d.attempt_count,
               d.attempt_count >= COALESCE(i.retry_max_retries, :default_max_retries) + 1 AS exhausted
          FROM delivery d JOIN integration i ON i.id = d.integration_id
         WHERE d.state = 'sending' AND d.lease_expires_at < now()
         ORDER BY d.lease_expires_at
         LIMIT :limit
           FOR UPDATE OF d SKIP LOCKED
    ), moved AS (
        UPDATE delivery d
           SET state = CASE WHEN lost.exhausted THEN 'dead' ELSE 'retrying' END,
               dead_reason = CASE WHEN lost.exhausted THEN :exhausted ELSE NULL END,
               next_attempt_at = now(),
               lease_expires_at = NULL,
               queued_at = NULL,
               last_error_class = 'worker_lost',
               last_error_detail = 'the worker sending this delivery stopped before recording an outcome',
               updated_at = now()
          FROM lost
         WHERE d.id = lost.id
        RETURNING d.id, d.attempt_count, d.state
    )
    INSERT INTO attempt (delivery_id, attempt_no, started_at, duration_ms, outcome, error_class)
    SELECT id, attempt_count, now(), 0, state, 'worker_lost' FROM moved
    ON CONFLICT ON CONSTRAINT attempt_delivery_no_key DO NOTHING
    RETURNING delivery_id
    """
)

OUTBOX_SQL = text(
    """
    UPDATE event SET next_fanout_at = now() + make_interval(secs => :grace_s)
     WHERE id IN (
        SELECT id FROM event
         WHERE fanned_out_at IS NULL AND next_fanout_at <= now()
         ORDER BY next_fanout_at
         LIMIT :limit
           FOR UPDATE SKIP LOCKED)
    RETURNING id
    """
)

DUE_SQL = text(
    """
    UPDATE delivery SET queued_at = now()
     WHERE id IN (
        SELECT id FROM delivery
         WHERE state IN ('pending', 'retrying')
           AND next_attempt_at <= now()
           AND (queued_at IS NULL OR queued_at < now() - make_interval(secs => :requeue_after_s))
         ORDER BY next_attempt_at
         LIMIT :limit
           FOR UPDATE SKIP LOCKED)
    RETURNING id
    """
)


def _rounds(runtime: ProcessRuntime, sql: TextClause, params: dict[str, object]) -> list[uuid.UUID]:
    taken: list[uuid.UUID] = []
    limit = runtime.settings.sweep_batch_size
    for _ in range(MAX_ROUNDS):
        with runtime.sessions() as session:
            ids: list[uuid.UUID] = list(session.scalars(sql, {**params, "limit": limit}))
            session.commit()
        taken.extend(ids)
        if len(ids) < limit:
            break
    return taken


def sweep_once(runtime: ProcessRuntime) -> dict[str, int]:
    s = runtime.settings
    lost = _rounds(
        runtime,
        RECOVER_LOST_SQL,
        {"default_max_retries": s.retry_max_retries, "exhausted": ATTEMPTS_EXHAUSTED},
    )
    if lost:
        log.warning("sweep: %d deliveries were lost mid-send and are due again", len(lost))
    events = _rounds(runtime, OUTBOX_SQL, {"grace_s": s.fanout_grace_s})
    publish_fanout(events)
    due = _rounds(runtime, DUE_SQL, {"requeue_after_s": s.requeue_after_s})
    publish_deliver_batches(due)
    return {"lost": len(lost), "fanout": len(events), "due": len(due)}


@shared_task(name=TASK_SWEEP, ignore_result=True)
def sweep() -> dict[str, int]:
    return sweep_once(get_runtime())
