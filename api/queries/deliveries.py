"""Deliveries: one delivery's fields and attempts, and the delivery listing (`GET /v1/deliveries`, an
integration's Recent deliveries, the console's delivery tables)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.queries.keyset import newest_first, next_cursor, split_page
from api.schemas import AttemptOut, DeliveryDetailOut, DeliveryPage
from shared.db.models import Attempt, Delivery, Event

#: the states a listing may filter on
LISTED_STATES = ("pending", "sending", "retrying", "waiting", "delivered", "dead", "skipped", "superseded")


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
    """Attempts per delivery: the current budget first, oldest attempt first within a budget (served by the
    attempt_delivery_no_key unique index, whose leading column is delivery_id)."""
    out: dict[uuid.UUID, list[AttemptOut]] = {}
    if delivery_ids:
        for a in session.scalars(
            select(Attempt)
            .where(Attempt.delivery_id.in_(delivery_ids))
            .order_by(Attempt.delivery_id, Attempt.redrives_ago, Attempt.attempt_no)
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


@dataclass(frozen=True)
class DeliveryQuery:
    """Which deliveries (every given filter must hold), newest first by creation."""

    integration_id: uuid.UUID | None = None
    state: str | None = None
    project: str | None = None
    since: datetime | None = None  # created at or after
    until: datetime | None = None  # created before


def delivery_page(session: Session, q: DeliveryQuery, *, limit: int, cursor: str | None) -> DeliveryPage:
    """One page of deliveries with their attempts, served by delivery_integration_created_idx (one
    integration), delivery_state_created_idx (one state) or delivery_created_idx (0008_console_indexes)."""
    stmt = select(Delivery)
    if q.integration_id is not None:
        stmt = stmt.where(Delivery.integration_id == q.integration_id)
    if q.state is not None:
        stmt = stmt.where(Delivery.state == q.state)
    if q.project is not None:
        stmt = stmt.where(Delivery.event_id.in_(select(Event.id).where(Event.project == q.project)))
    if q.since is not None:
        stmt = stmt.where(Delivery.created_at >= q.since)
    if q.until is not None:
        stmt = stmt.where(Delivery.created_at < q.until)
    stmt = newest_first(stmt, Delivery.created_at, Delivery.id, limit=limit, cursor=cursor)
    page, more = split_page(list(session.scalars(stmt)), limit)
    last = page[-1] if page else None
    return DeliveryPage(
        items=delivery_details(session, page),
        next_cursor=next_cursor(last.created_at if last else None, last.id if last else None, more),
    )
