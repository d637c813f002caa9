"""One delivery with its attempts (what `herald deliveries show` prints)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.deps import DbSession, Reader
from api.errors import envelope, not_found
from api.schemas import AttemptOut, DeliveryDetailOut, Envelope, error_responses
from shared.db.models import Attempt, Delivery, Event

router = APIRouter(
    prefix="/v1/deliveries", tags=["deliveries"], responses=error_responses(400, 401, 403, 413, 422, 503)
)


def delivery_fields(d: Delivery, attempts: dict[uuid.UUID, list[AttemptOut]]) -> dict[str, Any]:
    """A delivery row as `DeliveryOut` fields (shared by every view of deliveries)."""
    return {
        "id": d.id,
        "integration_id": d.integration_id,
        "state": d.state,
        "attempt_count": d.attempt_count,
        "next_attempt_at": d.next_attempt_at if d.state in ("pending", "retrying") else None,
        "last_error_class": d.last_error_class,
        "last_error_detail": d.last_error_detail,
        "dead_reason": d.dead_reason,
        "delivered_at": d.delivered_at,
        "attempts": attempts.get(d.id, []),
    }


def attempts_of(session: Session, delivery_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[AttemptOut]]:
    """Attempts per delivery: the current budget first, oldest attempt first within a budget."""
    out: dict[uuid.UUID, list[AttemptOut]] = {}
    if delivery_ids:
        for a in session.scalars(
            select(Attempt)
            .where(Attempt.delivery_id.in_(delivery_ids))
            .order_by(Attempt.redrives_ago, Attempt.attempt_no)
        ):
            out.setdefault(a.delivery_id, []).append(AttemptOut.model_validate(a, from_attributes=True))
    return out


def delivery_details(session: Session, rows: Sequence[Delivery]) -> list[DeliveryDetailOut]:
    events = (
        {e.id: e for e in session.scalars(select(Event).where(Event.id.in_({d.event_id for d in rows})))}
        if rows
        else {}
    )
    attempts = attempts_of(session, [d.id for d in rows])
    items = []
    for d in rows:
        event = events[d.event_id]
        items.append(
            DeliveryDetailOut(
                **delivery_fields(d, attempts),
                event_id=d.event_id,
                event_type=event.type,
                project=event.project,
                environment=event.environment,
                created_at=d.created_at,
                updated_at=d.updated_at,
            )
        )
    return items


@router.get("/{delivery_id}", response_model=Envelope[DeliveryDetailOut], responses=error_responses(404))
def get_delivery(delivery_id: uuid.UUID, session: DbSession, _: Reader) -> dict[str, Any]:
    row = session.get(Delivery, delivery_id)
    if row is None:
        raise not_found("delivery")
    [detail] = delivery_details(session, [row])
    return envelope(detail.model_dump(mode="json"))
