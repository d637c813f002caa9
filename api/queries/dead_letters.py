"""Dead letters: the filter as a request states it, the page with counts by reason, and the bulk selection
(shared by `GET/POST /v1/dead-letters*` and the console's Dead letters page). The selection itself is
shared/dead_letter_selection.py's, which the redrive task applies too."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.errors import ApiError
from api.queries.keyset import check_time_range, newest_first, next_cursor, split_page
from api.schemas import DeadLetterList, DeadLetterOut, DeadLetterSelect
from shared import deliveries as deadletters
from shared.db.models import Delivery, Event, Integration


def dead_letter_filter(
    *,
    ids: Sequence[uuid.UUID] = (),
    integration_id: uuid.UUID | None = None,
    provider: str | None = None,
    project: str | None = None,
    reason: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    states: Sequence[str] = ("dead",),
) -> deadletters.DeadLetterFilter:
    check_time_range(since, until)
    return deadletters.DeadLetterFilter(
        ids=tuple(ids),
        integration_id=integration_id,
        provider=provider,
        project=project,
        reason=reason,
        since=since,
        until=until,
        states=tuple(dict.fromkeys(states)),
    )


def selection(body: DeadLetterSelect) -> deadletters.DeadLetterFilter:
    """What a redrive or purge acts on; an empty selection is refused unless `all` says so."""
    filters = body.model_dump(exclude={"all", "states", "ids"}, exclude_none=True)
    if not body.ids and not filters and not body.all:
        raise ApiError(
            422,
            "empty_selection",
            "give ids or at least one filter (integration_id, provider, project, reason, since, until), or all=true",
        )
    return dead_letter_filter(
        ids=body.ids,
        integration_id=body.integration_id,
        provider=body.provider,
        project=body.project,
        reason=body.reason,
        since=body.since,
        until=body.until,
        states=list(body.states),
    )


def dead_letter_page(
    session: Session, flt: deadletters.DeadLetterFilter, *, limit: int, cursor: str | None
) -> DeadLetterList:
    """Dead letters newest first (by when they died), with the total and the counts by reason of the whole
    selection. Served by delivery_dlq_updated_idx, or delivery_dead_idx for one integration."""
    stmt = (
        select(Delivery, Event.type, Event.project, Integration.name, Integration.provider)
        .join(Event, Event.id == Delivery.event_id)
        .join(Integration, Integration.id == Delivery.integration_id)
        .where(*deadletters.conditions(flt))
    )
    stmt = newest_first(stmt, Delivery.updated_at, Delivery.id, limit=limit, cursor=cursor)
    page, more = split_page(session.execute(stmt).all(), limit)
    items = [
        DeadLetterOut(
            id=d.id,
            event_id=d.event_id,
            integration_id=d.integration_id,
            integration_name=name,
            provider=provider,
            project=event_project,
            event_type=event_type,
            state=d.state,
            reason=d.dead_reason or d.state,
            last_error_class=d.last_error_class,
            last_error_detail=d.last_error_detail,
            attempt_count=d.attempt_count,
            created_at=d.created_at,
            updated_at=d.updated_at,
        )
        for d, event_type, event_project, name, provider in page
    ]
    counts = deadletters.counts_by_reason(session, flt)
    last = page[-1][0] if page else None
    return DeadLetterList(
        items=items,
        counts_by_reason=counts,
        total=sum(counts.values()),
        next_cursor=next_cursor(last.updated_at if last else None, last.id if last else None, more),
    )
