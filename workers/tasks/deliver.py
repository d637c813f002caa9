"""Deliver: one task = one batch of delivery ids from Redis (published by fan-out for large fan-outs, and by
the sweeper for retries and recovery), claimed with one conditional UPDATE and handed to the send loop.

Ids not claimed belong to someone else (already sent, or claimed by another worker) and are ignored. The task
returns once its sends are handed off (workers/dispatch.py): it never waits on a destination.
"""

from __future__ import annotations

import logging
import uuid

from celery import shared_task

from shared.tasknames import TASK_DELIVER
from workers import dispatch
from workers.runtime import get_runtime

log = logging.getLogger(__name__)


@shared_task(name=TASK_DELIVER, ignore_result=True)
def deliver(delivery_ids: list[str]) -> int:
    ids: list[uuid.UUID] = []
    for raw in delivery_ids if isinstance(delivery_ids, list) else []:
        try:
            ids.append(uuid.UUID(str(raw)))
        except ValueError:
            log.error("deliver: malformed delivery id %r dropped", raw)
    return dispatch.deliver(get_runtime(), ids) if ids else 0
