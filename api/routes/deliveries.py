"""Deliveries: the listing (`GET /v1/deliveries`) and one delivery with its attempts (what `herald deliveries
show` prints). The queries are api/queries/deliveries.py's, shared with the console."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.deps import DbSession, Reader
from api.errors import envelope, not_found
from api.queries.deliveries import (
    LISTED_STATES,
    DeliveryQuery,
    attempts_of,
    delivery_details,
    delivery_fields,
    delivery_page,
)
from api.queries.keyset import check_time_range
from api.routes._common import MAX_PAGE
from api.schemas import DeliveryDetailOut, DeliveryPage, Envelope, error_responses
from shared.db.models import Delivery

__all__ = ["attempts_of", "delivery_details", "delivery_fields", "router"]

router = APIRouter(
    prefix="/v1/deliveries", tags=["deliveries"], responses=error_responses(400, 401, 403, 413, 422, 503)
)

StateFilter = Annotated[str | None, Query(pattern="^(" + "|".join(LISTED_STATES) + ")$")]


@router.get("", response_model=Envelope[DeliveryPage])
def list_deliveries(
    session: DbSession,
    _: Reader,
    integration_id: uuid.UUID | None = None,
    state: StateFilter = None,
    project: Annotated[str | None, Query(max_length=100)] = None,
    since: Annotated[datetime | None, Query(description="created at or after (ISO 8601 with zone)")] = None,
    until: Annotated[datetime | None, Query(description="created before (ISO 8601 with zone)")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    """Deliveries newest first, each with its attempts. Page with `next_cursor`."""
    check_time_range(since, until)
    q = DeliveryQuery(integration_id=integration_id, state=state, project=project, since=since, until=until)
    return envelope(delivery_page(session, q, limit=limit, cursor=cursor).model_dump(mode="json"))


@router.get("/{delivery_id}", response_model=Envelope[DeliveryDetailOut], responses=error_responses(404))
def get_delivery(delivery_id: uuid.UUID, session: DbSession, _: Reader) -> dict[str, Any]:
    row = session.get(Delivery, delivery_id)
    if row is None:
        raise not_found("delivery")
    [detail] = delivery_details(session, [row])
    return envelope(detail.model_dump(mode="json"))
