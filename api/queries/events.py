"""Events: the search listing (`GET /v1/events`, the console's Events page) and one event with every
delivery and attempt (`GET /v1/events/{id}`, the console's delivery timeline)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import Session

from api.queries.keyset import newest_first, next_cursor, split_page
from api.queries.schemas import EventPage, EventSummaryOut
from shared.db.models import Delivery, Event


@dataclass(frozen=True)
class EventQuery:
    """Which events (every given filter must hold), newest first.

    `text` is an exact key: an event id, a lifecycle key (`release:web:1.4.2`), or, with `project`, the op id
    it was posted with (the (project, op id) key is unique); each is an index lookup."""

    project: str | None = None
    kind: str | None = None
    type: str | None = None
    environment: str | None = None
    severity: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    text: str | None = None


def _text_match(q: EventQuery) -> ColumnElement[bool]:
    text = (q.text or "").strip()
    keys = [Event.lifecycle_key == text]
    with contextlib.suppress(ValueError):
        keys.append(Event.id == uuid.UUID(text))
    if q.project is not None:
        keys.append(Event.idempotency_key == text)
    return or_(*keys)


def event_page(session: Session, q: EventQuery, *, limit: int, cursor: str | None) -> EventPage:
    """Served by event_created_idx (created_at, id), event_project_created_idx for one project, and the
    lifecycle-key / (project, op id) indexes for a text search."""
    stmt = select(Event)
    if q.project is not None:
        stmt = stmt.where(Event.project == q.project)
    if q.kind is not None:
        stmt = stmt.where(Event.kind == q.kind)
    if q.type is not None:
        stmt = stmt.where(Event.type == q.type)
    if q.environment is not None:
        stmt = stmt.where(Event.environment == q.environment)
    if q.severity is not None:
        stmt = stmt.where(Event.severity == q.severity)
    if q.since is not None:
        stmt = stmt.where(Event.created_at >= q.since)
    if q.until is not None:
        stmt = stmt.where(Event.created_at < q.until)
    if q.text:
        stmt = stmt.where(_text_match(q))
    stmt = newest_first(stmt, Event.created_at, Event.id, limit=limit, cursor=cursor)
    page, more = split_page(list(session.scalars(stmt)), limit)
    counts = deliveries_by_state(session, [e.id for e in page])
    last = page[-1] if page else None
    return EventPage(
        items=[
            EventSummaryOut(
                id=e.id,
                kind=e.kind,
                type=e.type,
                project=e.project,
                environment=e.environment,
                severity=e.severity,
                lifecycle_key=e.lifecycle_key,
                op_id=e.idempotency_key,
                created_at=e.created_at,
                fanned_out_at=e.fanned_out_at,
                deliveries_by_state=counts.get(e.id, {}),
            )
            for e in page
        ],
        next_cursor=next_cursor(last.created_at if last else None, last.id if last else None, more),
    )


def deliveries_by_state(session: Session, event_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, dict[str, int]]:
    """Per event, its deliveries by state, in one statement (delivery_event_integration_key leads with event_id)."""
    out: dict[uuid.UUID, dict[str, int]] = {}
    if event_ids:
        rows = session.execute(
            select(Delivery.event_id, Delivery.state, func.count())
            .where(Delivery.event_id.in_(event_ids))
            .group_by(Delivery.event_id, Delivery.state)
        )
        for event_id, state, n in rows:
            out.setdefault(event_id, {})[state] = int(n)
    return out
