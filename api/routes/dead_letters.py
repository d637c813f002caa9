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

from api.deps import Admin, DbSession, Reader
from api.errors import envelope, not_found
from api.queries.dead_letters import dead_letter_filter, dead_letter_page, selection
from api.routes._common import MAX_PAGE, run_bulk
from api.schemas import (
    BulkJobOut,
    BulkResult,
    DeadLetterList,
    DeadLetterSelect,
    DeadLetterState,
    Envelope,
    error_responses,
)
from shared.db.models import BulkJob

router = APIRouter(
    prefix="/v1/dead-letters",
    tags=["dead letters"],
    responses=error_responses(400, 401, 403, 413, 415, 422, 503),
)


@router.get("", response_model=Envelope[DeadLetterList])
def list_dead_letters(
    session: DbSession,
    _: Reader,
    integration_id: uuid.UUID | None = None,
    provider: Annotated[str | None, Query(max_length=32)] = None,
    project: Annotated[str | None, Query(max_length=100)] = None,
    reason: Annotated[str | None, Query(max_length=64)] = None,
    since: Annotated[datetime | None, Query(description="dead at or after (ISO 8601 with zone)")] = None,
    until: Annotated[datetime | None, Query(description="dead before (ISO 8601 with zone)")] = None,
    state: Annotated[list[DeadLetterState] | None, Query(description="dead (default) and/or skipped")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    """Dead letters newest first, with the total and the counts by reason of the whole selection."""
    flt = dead_letter_filter(
        integration_id=integration_id,
        provider=provider,
        project=project,
        reason=reason,
        since=since,
        until=until,
        states=list(state or ["dead"]),
    )
    return envelope(dead_letter_page(session, flt, limit=limit, cursor=cursor).model_dump(mode="json"))


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
    result = run_bulk(request, session, "redrive", selection(body))
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
    result = run_bulk(request, session, "purge", selection(body))
    if result.job_id is not None:
        response.status_code = 202
    return envelope(result.model_dump(mode="json"))


@router.get("/jobs/{job_id}", response_model=Envelope[BulkJobOut], responses=error_responses(404))
def get_job(job_id: uuid.UUID, session: DbSession, _: Reader) -> dict[str, Any]:
    job = session.get(BulkJob, job_id)
    if job is None:
        raise not_found("job")
    return envelope(BulkJobOut.model_validate(job, from_attributes=True).model_dump(mode="json"))
