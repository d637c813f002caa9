"""Retention (Celery beat, every `retention_interval_s`): prune what is older than `retention_days`.

- delivered deliveries whose `delivered_at` is past the cutoff, with their attempts (ON DELETE CASCADE);
- skipped deliveries (of a disabled integration, replayable) untouched for `skipped_retention_days`: they
  must not pin their events forever;
- events past the cutoff that have no delivery left and were fanned out (an event still awaiting fan-out, or
  with a dead letter, a recent skipped or an in-flight delivery, is kept).
Dead letters are the operator's to redrive or purge; retention never drops them.

Deletes go `retention_batch_size` rows per statement, each its own transaction, so a large backlog never holds
long locks; one run stops after MAX_ROUNDS batches per table and the next run carries on.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from celery import shared_task
from sqlalchemy import text

from shared.tasknames import TASK_RETENTION
from workers.runtime import ProcessRuntime, get_runtime

log = logging.getLogger(__name__)

MAX_ROUNDS = 200

PRUNE_DELIVERED_SQL = text(
    """
    DELETE FROM delivery WHERE id IN (
        SELECT id FROM delivery
         WHERE state = 'delivered' AND delivered_at < :cutoff
         LIMIT :limit
           FOR UPDATE SKIP LOCKED)
    """
)

PRUNE_SKIPPED_SQL = text(
    """
    DELETE FROM delivery WHERE id IN (
        SELECT id FROM delivery
         WHERE state = 'skipped' AND updated_at < :cutoff
         LIMIT :limit
           FOR UPDATE SKIP LOCKED)
    """
)

PRUNE_EVENTS_SQL = text(
    """
    DELETE FROM event WHERE id IN (
        SELECT e.id FROM event e
         WHERE e.created_at < :cutoff
           AND e.fanned_out_at IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM delivery d WHERE d.event_id = e.id)
         LIMIT :limit
           FOR UPDATE SKIP LOCKED)
    """
)


def prune_once(runtime: ProcessRuntime, now: datetime | None = None) -> dict[str, int]:
    s = runtime.settings
    now = now or datetime.now(UTC)
    steps = []  # in this order: events are pruned once their deliveries have gone
    if s.retention_days > 0:
        steps.append(("deliveries", PRUNE_DELIVERED_SQL, now - timedelta(days=s.retention_days)))
    if s.skipped_retention_days > 0:
        steps.append(("skipped", PRUNE_SKIPPED_SQL, now - timedelta(days=s.skipped_retention_days)))
    if s.retention_days > 0:
        steps.append(("events", PRUNE_EVENTS_SQL, now - timedelta(days=s.retention_days)))
    limit = s.retention_batch_size
    pruned: dict[str, int] = {"deliveries": 0, "skipped": 0, "events": 0}
    for name, sql, cutoff in steps:
        total = 0
        for _ in range(MAX_ROUNDS):
            with runtime.sessions() as session:
                n = int(getattr(session.execute(sql, {"cutoff": cutoff, "limit": limit}), "rowcount", 0) or 0)
                session.commit()
            total += n
            if n < limit:
                break
        pruned[name] = total
    if any(pruned.values()):
        log.info(
            "retention: pruned %(deliveries)d delivered and %(skipped)d skipped deliveries and %(events)d events",
            pruned,
        )
    return pruned


@shared_task(name=TASK_RETENTION, ignore_result=True)
def retention() -> dict[str, int]:
    return prune_once(get_runtime())
