"""The dead-letter set: list with counts by reason, redrive (fresh attempt budget), purge, bulk job status.

Small selections run inside the request; larger ones (`dlq_inline_limit`) become a `bulk_job` run by the
`herald.redrive` task, so a redrive of 100k rows answers at once with a job id to poll.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from fastapi import Request as FastApiRequest
from sqlalchemy import select, tuple_

from api.deps import Admin, DbSession, Reader
from api.errors import ApiError, envelope, not_found
from api.routes._common import MAX_PAGE, decode_cursor, encode_cursor, run_bulk
from api.schemas import (
    BulkJobOut,
    BulkResult,
    DeadLetterList,
    DeadLetterOut,
    DeadLetterSelect,
    DeadLetterState,
    Envelope,
    error_responses,
)
from shared import deliveries as deadletters
from shared.db.models import BulkJob, Delivery, Event, Integration

router = APIRouter(
    prefix="/v1/dead-letters",
    tags=["dead letters"],
    responses=error_responses(400, 401, 403, 413, 415, 422, 503),
)


def _filter(
    *,
    ids: list[uuid.UUID] | None = None,
    integration_id: uuid.UUID | None,
    project: str | None,
    reason: str | None,
    since: datetime | None,
    until: datetime | None,
    states: list[str],
) -> deadletters.DeadLetterFilter:
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise ApiError(422, "invalid_field", f"{name}: give a time zone (e.g. 2026-01-01T00:00:00Z)")
    if since is not None and until is not None and since >= until:
        raise ApiError(422, "invalid_field", "since: must be before until")
    return deadletters.DeadLetterFilter(
        ids=tuple(ids or ()),
        integration_id=integration_id,
        project=project,
        reason=reason,
        since=since,
        until=until,
        states=tuple(dict.fromkeys(states)),
    )


@router.get("", response_model=Envelope[DeadLetterList])
def list_dead_letters(
    session: DbSession,
    _: Reader,
    integration_id: uuid.UUID | None = None,
    project: Annotated[str | None, Query(max_length=100)] = None,
    reason: Annotated[str | None, Query(max_length=64)] = None,
    since: Annotated[datetime | None, Query(description="dead at or after (ISO 8601 with zone)")] = None,
    until: Annotated[datetime | None, Query(description="dead before (ISO 8601 with zone)")] = None,
    state: Annotated[list[DeadLetterState] | None, Query(description="dead (default) and/or skipped")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    """Dead letters newest first, with the total and the counts by reason of the whole selection."""
    flt = _filter(
        integration_id=integration_id,
        project=project,
        reason=reason,
        since=since,
        until=until,
        states=list(state or ["dead"]),
    )
    stmt = (
        select(Delivery, Event.type, Event.project, Integration.name, Integration.provider)
        .join(Event, Event.id == Delivery.event_id)
        .join(Integration, Integration.id == Delivery.integration_id)
        .where(*deadletters.conditions(flt))
        .order_by(Delivery.updated_at.desc(), Delivery.id.desc())
        .limit(limit + 1)
    )
    if cursor is not None:
        ts, last_id = decode_cursor(cursor)
        stmt = stmt.where(tuple_(Delivery.updated_at, Delivery.id) < tuple_(ts, last_id))
    rows = session.execute(stmt).all()
    page, more = rows[:limit], len(rows) > limit
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
    result = DeadLetterList(
        items=items,
        counts_by_reason=counts,
        total=sum(counts.values()),
        next_cursor=encode_cursor(last.updated_at, last.id) if more and last is not None else None,
    )
    return envelope(result.model_dump(mode="json"))


def _selection(body: DeadLetterSelect) -> deadletters.DeadLetterFilter:
    filters = body.model_dump(exclude={"all", "states", "ids"}, exclude_none=True)
    if not body.ids and not filters and not body.all:
        raise ApiError(
            422,
            "empty_selection",
            "give ids or at least one filter (integration_id, project, reason, since, until), or all=true",
        )
    return _filter(
        ids=body.ids,
        integration_id=body.integration_id,
        project=body.project,
        reason=body.reason,
        since=body.since,
        until=body.until,
        states=list(body.states),
    )


@router.post(
    "/redrive",
    response_model=Envelope[BulkResult],
    responses={202: {"model": Envelope[BulkResult], "description": "large set: running as a background job"}},
)
def redrive(
    body: DeadLetterSelect, request: FastApiRequest, response: Response, session: DbSession, _: Admin
) -> dict[str, Any]:
    """Put the selected dead (or skipped) deliveries back to `pending` with a fresh attempt budget.

    Idempotent: a row already redriven is no longer dead, so repeating the call re-queues nothing twice.
    Deliveries of a disabled integration stay where they are (`processed` < `matched`)."""
    result = run_bulk(request, session, "redrive", _selection(body))
    if result.job_id is not None:
        response.status_code = 202
    return envelope(result.model_dump(mode="json"))


@router.post(
    "/purge",
    response_model=Envelope[BulkResult],
    responses={202: {"model": Envelope[BulkResult], "description": "large set: running as a background job"}},
)
def purge(
    body: DeadLetterSelect, request: FastApiRequest, response: Response, session: DbSession, _: Admin
) -> dict[str, Any]:
    """Delete the selected dead (or skipped) deliveries and their attempts for good."""
    result = run_bulk(request, session, "purge", _selection(body))
    if result.job_id is not None:
        response.status_code = 202
    return envelope(result.model_dump(mode="json"))


@router.get("/jobs/{job_id}", response_model=Envelope[BulkJobOut], responses=error_responses(404))
def get_job(job_id: uuid.UUID, session: DbSession, _: Reader) -> dict[str, Any]:
    job = session.get(BulkJob, job_id)
    if job is None:
        raise not_found("job")
    return envelope(BulkJobOut.model_validate(job, from_attributes=True).model_dump(mode="json"))
