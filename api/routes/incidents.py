"""Reading gateway lifecycles back: `GET /v1/incidents[/{event_id}]`, `GET /v1/things[/{thing_id}]`.

One lifecycle's current state (title, status, severity, merged attrs, started/ended, open or closed) and
every dispatch in arrival order with its deliveries. Lists filter by channel, project, open/closed and
severity, newest first, with a cursor on (created_at, id) served by the gateway_lifecycle indexes.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.deps import DbSession, Principal, Reader
from api.errors import envelope, not_found
from api.gateway.schemas import DispatchOut, LifecycleDetailOut, LifecycleOut, LifecyclePage
from api.queries.deliveries import attempts_of, delivery_fields
from api.queries.keyset import newest_first, next_cursor, split_page
from api.routes._common import MAX_PAGE
from api.schemas import DeliveryOut, Envelope, error_responses
from shared.db.models import Delivery, Event, GatewayDispatch, GatewayLifecycle
from shared.events import GATEWAY_SEVERITIES

router = APIRouter(tags=["incidents and things"], responses=error_responses(400, 401, 403, 422, 503))

Severity = Literal["critical", "high", "normal", "low"]
assert set(GATEWAY_SEVERITIES) == {"critical", "high", "normal", "low"}


def _out(row: GatewayLifecycle) -> dict[str, Any]:
    details = row.details or {}
    return {
        "kind": row.kind,
        "id": row.object_id,
        "channel_id": row.channel_id,
        "project": row.project,
        "title": row.title,
        "description": row.description,
        "status": row.status,
        "message": row.message,
        "severity": row.severity,
        "state": row.state,
        "open": row.is_open,
        "attrs": row.attrs,
        "tags": details.get("tags") or [],
        "started_at": row.started_at,
        "ended_at": row.ended_at,
        "last_event_time": row.last_event_time,
        "dispatch_count": row.last_sequence,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "details": {
            k: v
            for k, v in details.items()
            if k not in ("title", "description", "status", "message", "severity", "state", "open", "attrs")
            and k not in ("tags", "started_at", "ended_at", "last_event_time")
        },
    }


def lifecycle_page(
    session: Session,
    principal: Principal,
    kind: str,
    *,
    channel: str | None,
    project: str | None,
    is_open: bool | None,
    severity: str | None,
    cursor: str | None,
    limit: int,
) -> LifecyclePage:
    """Newest first. The cursor is a row comparison on (created_at, id) so the gateway_lifecycle indexes
    (kind[, channel | project], created_at, id) start at the cursor: a deep page costs what the first does."""
    stmt = select(GatewayLifecycle).where(GatewayLifecycle.kind == kind)
    if principal.project is not None and "admin" not in principal.scopes:
        project = project or principal.project
        principal.require_project(project)
    if channel is not None:
        stmt = stmt.where(GatewayLifecycle.channel_id == channel)
    if project is not None:
        stmt = stmt.where(GatewayLifecycle.project == project)
    if is_open is not None:
        stmt = stmt.where(GatewayLifecycle.is_open.is_(is_open))
    if severity is not None:
        stmt = stmt.where(GatewayLifecycle.severity == severity)
    stmt = newest_first(stmt, GatewayLifecycle.created_at, GatewayLifecycle.id, limit=limit, cursor=cursor)
    rows, more = split_page(list(session.scalars(stmt)), limit)
    last = rows[-1] if rows else None
    return LifecyclePage(
        items=[LifecycleOut(**_out(r)) for r in rows],
        next_cursor=next_cursor(last.created_at if last else None, last.id if last else None, more),
    )


def lifecycle_detail(session: Session, principal: Principal, kind: str, object_id: str) -> LifecycleDetailOut:
    row = session.scalar(
        select(GatewayLifecycle).where(GatewayLifecycle.kind == kind, GatewayLifecycle.object_id == object_id)
    )
    if row is None:
        raise not_found("incident" if kind == "incident" else "thing")
    principal.require_project(row.project)
    dispatches = list(
        session.scalars(
            select(GatewayDispatch)
            .where(GatewayDispatch.lifecycle_id == row.id)
            .order_by(GatewayDispatch.sequence)
        )
    )
    event_ids = [d.event_row_id for d in dispatches if d.event_row_id is not None]
    events = (
        {e.id: e for e in session.scalars(select(Event).where(Event.id.in_(event_ids)))} if event_ids else {}
    )
    deliveries = (
        list(
            session.scalars(
                select(Delivery)
                .where(Delivery.event_id.in_(event_ids))
                .order_by(Delivery.created_at, Delivery.id)
            )
        )
        if event_ids
        else []
    )
    attempts = attempts_of(session, [d.id for d in deliveries])
    by_event: dict[Any, list[DeliveryOut]] = {}
    for delivery in deliveries:
        by_event.setdefault(delivery.event_id, []).append(DeliveryOut(**delivery_fields(delivery, attempts)))
    out = []
    for d in dispatches:
        event = events.get(d.event_row_id) if d.event_row_id else None
        fields = dict((event.payload.get("dispatch") or {}) if event else {})
        out.append(
            DispatchOut(
                sequence=d.sequence,
                route=d.route,
                op_id=d.op_id,
                event_time=d.event_time,
                created_at=d.created_at,
                herald_event_id=d.event_row_id,
                type=event.type if event else None,
                fields=fields,
                deliveries=by_event.get(d.event_row_id, []),
            )
        )
    return LifecycleDetailOut(**_out(row), dispatches=out)


Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]


@router.get("/v1/incidents", response_model=Envelope[LifecyclePage])
def list_incidents(
    session: DbSession,
    principal: Reader,
    channel: str | None = None,
    project: str | None = None,
    open: bool | None = None,
    severity: Severity | None = None,
    cursor: str | None = None,
    limit: Limit = 50,
) -> dict[str, Any]:
    """Incidents (PushGo Events), newest first."""
    page = lifecycle_page(
        session,
        principal,
        "incident",
        channel=channel,
        project=project,
        is_open=open,
        severity=severity,
        cursor=cursor,
        limit=limit,
    )
    return envelope(page.model_dump(mode="json"))


@router.get(
    "/v1/incidents/{event_id}", response_model=Envelope[LifecycleDetailOut], responses=error_responses(404)
)
def get_incident(event_id: str, session: DbSession, principal: Reader) -> dict[str, Any]:
    """An incident's current state and every dispatch (create, updates, close) with its deliveries."""
    return envelope(lifecycle_detail(session, principal, "incident", event_id).model_dump(mode="json"))


@router.get("/v1/things", response_model=Envelope[LifecyclePage])
def list_things(
    session: DbSession,
    principal: Reader,
    channel: str | None = None,
    project: str | None = None,
    open: bool | None = None,
    cursor: str | None = None,
    limit: Limit = 50,
) -> dict[str, Any]:
    """Things, newest first (`open=false`: archived or deleted)."""
    page = lifecycle_page(
        session,
        principal,
        "thing",
        channel=channel,
        project=project,
        is_open=open,
        severity=None,
        cursor=cursor,
        limit=limit,
    )
    return envelope(page.model_dump(mode="json"))


@router.get(
    "/v1/things/{thing_id}", response_model=Envelope[LifecycleDetailOut], responses=error_responses(404)
)
def get_thing(thing_id: str, session: DbSession, principal: Reader) -> dict[str, Any]:
    """A thing's current state and every dispatch with its deliveries."""
    return envelope(lifecycle_detail(session, principal, "thing", thing_id).model_dump(mode="json"))
