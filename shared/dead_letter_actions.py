"""The dead-letter set's two transitions: redrive (dead|skipped -> pending, a fresh budget) and purge.

Part of the delivery state machine (shared/deliveries.py names the states and every allowed move), kept apart
because the API's bulk jobs and the redrive task are their only callers. Like every transition, each is one
guarded statement, so concurrent or repeated redrives move each row once.
"""

from __future__ import annotations

import uuid

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from shared.db.models import Attempt, Delivery, Integration
from shared.dead_letter_selection import DeadLetterFilter, conditions
from shared.deliveries import DEAD_LETTER_STATES
from shared.deliveries import DeliveryState as S


def redrive_batch(session: Session, f: DeadLetterFilter, limit: int, *, queued: bool) -> list[uuid.UUID]:
    """Move up to `limit` matching deliveries back to `pending` with a fresh budget; return their ids.

    A fresh budget: attempt_count, the pacing count and the budget clock start again, due now. The earlier
    attempts stay with `redrives_ago` bumped, so history survives and new attempt numbers do not collide.
    Deliveries of a disabled integration are left alone (they would only be skipped again).
    `queued=True` marks them as published (the caller publishes them now); otherwise the sweeper publishes
    them within a sweep interval. Concurrent or repeated redrives move each row once. The caller commits."""
    picked = (
        select(Delivery.id)
        .join(Integration, Integration.id == Delivery.integration_id)
        .where(*conditions(f), Integration.enabled.is_(True))
        .limit(limit)
        .with_for_update(of=Delivery, skip_locked=True)
        .scalar_subquery()
    )
    ids = list(
        session.scalars(
            update(Delivery)
            .where(Delivery.id.in_(picked), Delivery.state.in_(DEAD_LETTER_STATES))
            .values(
                state=S.PENDING,
                attempt_count=0,
                paced_count=0,
                budget_started_at=None,
                next_attempt_at=func.now(),
                queued_at=func.now() if queued else None,
                lease_expires_at=None,
                dead_reason=None,
                updated_at=func.now(),
            )
            .returning(Delivery.id)
            .execution_options(synchronize_session=False)
        )
    )
    if ids:
        session.execute(
            update(Attempt)
            .where(Attempt.delivery_id.in_(ids))
            .values(redrives_ago=Attempt.redrives_ago + 1)
            .execution_options(synchronize_session=False)
        )
    return ids


def purge_batch(session: Session, f: DeadLetterFilter, limit: int) -> int:
    """Delete up to `limit` matching deliveries (their attempts go with them); the caller commits."""
    picked = (
        select(Delivery.id)
        .where(*conditions(f))
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    result = session.execute(
        delete(Delivery)
        .where(Delivery.id.in_(picked), Delivery.state.in_(DEAD_LETTER_STATES))
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)
