"""Bulk dead-letter work: one `bulk_job` row (a redrive or a purge over a filter) run in batches.

The API runs small sets itself and hands large ones here, so a request over 100k rows returns at once.
Each batch is its own transaction and advances `processed`, so progress is visible while it runs (the CLI's
progress bar polls it) and a worker killed half-way loses nothing: the redelivered task carries on with what
still matches. Redriven rows are left for the sweeper to publish (queued_at NULL), which feeds them to the
workers `sweep_batch_size` at a time instead of flooding Redis with 100k messages at once.
"""

from __future__ import annotations

import logging
import uuid

from celery import shared_task
from sqlalchemy import func, update

from shared import dead_letter_actions, deliveries
from shared.db.models import BulkJob
from shared.tasknames import TASK_REDRIVE
from workers.runtime import ProcessRuntime, get_runtime

log = logging.getLogger(__name__)


def run_job(runtime: ProcessRuntime, job_id: uuid.UUID) -> int:
    """Run the job to the end; return how many rows it moved in this run."""
    with runtime.sessions() as session:
        job = session.get(BulkJob, job_id)
        if job is None or job.state in ("done", "failed"):
            return 0
        action, flt = job.action, deliveries.DeadLetterFilter.from_json(job.filters)
        job.state = "running"
        job.started_at = job.started_at or func.now()
        session.commit()
    limit = runtime.settings.dlq_batch_size
    moved = 0
    try:
        while True:
            with runtime.sessions() as session:
                if action == "redrive":
                    n = len(dead_letter_actions.redrive_batch(session, flt, limit, queued=False))
                else:
                    n = dead_letter_actions.purge_batch(session, flt, limit)
                session.execute(
                    update(BulkJob).where(BulkJob.id == job_id).values(processed=BulkJob.processed + n)
                )
                session.commit()
            moved += n
            if n < limit:
                break
    except Exception as exc:
        log.exception("bulk job %s (%s) failed after %d rows", job_id, action, moved)
        with runtime.sessions() as session:
            session.execute(
                update(BulkJob)
                .where(BulkJob.id == job_id)
                .values(state="failed", error=type(exc).__name__, finished_at=func.now())
            )
            session.commit()
        raise
    with runtime.sessions() as session:
        session.execute(
            update(BulkJob).where(BulkJob.id == job_id).values(state="done", finished_at=func.now())
        )
        session.commit()
    log.info("bulk job %s: %s of %d rows done", job_id, action, moved)
    return moved


@shared_task(name=TASK_REDRIVE, ignore_result=True)
def redrive(job_id: str) -> int:
    try:
        parsed = uuid.UUID(str(job_id))
    except ValueError:
        log.error("redrive: malformed job id %r dropped", job_id)
        return 0
    return run_job(get_runtime(), parsed)
