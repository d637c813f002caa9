"""Publishing work onto Redis. Losing a publish is survivable (the sweeper republishes from PostgreSQL),
so failures are logged, never raised into the caller's already-committed work."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

from celery import current_app

from shared.config import get_settings
from shared.tasknames import TASK_DELIVER, TASK_FANOUT

log = logging.getLogger(__name__)


def publish_deliver_batches(delivery_ids: Sequence[uuid.UUID], batch_size: int | None = None) -> int:
    """Publish `deliver` tasks over the ids in batches; return how many batches went out."""
    if not delivery_ids:
        return 0
    size = batch_size or get_settings().deliver_batch_size
    sent = 0
    try:
        with current_app.producer_or_acquire() as producer:
            for start in range(0, len(delivery_ids), size):
                batch = [str(i) for i in delivery_ids[start : start + size]]
                current_app.send_task(TASK_DELIVER, args=[batch], producer=producer)
                sent += 1
    except Exception:
        log.warning(
            "could not publish %d deliveries; the sweeper will republish them",
            len(delivery_ids) - sent * size,
            exc_info=True,
        )
    return sent


def publish_fanout(event_ids: Sequence[uuid.UUID], batch_size: int | None = None) -> int:
    """Publish `fanout` tasks over the event ids, one message per batch; return how many batches went out."""
    if not event_ids:
        return 0
    size = batch_size or get_settings().deliver_batch_size
    sent = 0
    try:
        with current_app.producer_or_acquire() as producer:
            for start in range(0, len(event_ids), size):
                batch = [str(i) for i in event_ids[start : start + size]]
                current_app.send_task(TASK_FANOUT, args=[batch], producer=producer)
                sent += 1
    except Exception:
        log.warning(
            "could not publish fan-out of %d events; the sweeper will republish them",
            len(event_ids) - sent * size,
            exc_info=True,
        )
    return sent
