"""Deliver: one task = one batch of delivery ids from Redis (published by fan-out for large fan-outs, and by
the sweeper for retries and recovery), claimed with one conditional UPDATE and sent concurrently.

Ids not claimed belong to someone else (already sent, or claimed by another worker) and are ignored.
"""

from __future__ import annotations

import logging
import uuid

from celery import shared_task

from shared.tasknames import TASK_DELIVER
from workers.runtime import get_runtime
from workers.sending import claim, send_claimed

log = logging.getLogger(__name__)


def deliver_batch(delivery_ids: list[uuid.UUID]) -> int:
    runtime = get_runtime()
    return send_claimed(runtime, claim(runtime, delivery_ids))


@shared_task(name=TASK_DELIVER, ignore_result=True)
def deliver(delivery_ids: list[str]) -> int:
    ids: list[uuid.UUID] = []
    for raw in delivery_ids if isinstance(delivery_ids, list) else []:
        try:
            ids.append(uuid.UUID(str(raw)))
        except ValueError:
            log.error("deliver: malformed delivery id %r dropped", raw)
    return deliver_batch(ids) if ids else 0
