"""Ingestion: release and pipeline events in, 202 with the event id once the row is committed."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.deps import Authenticated, DbSession, Principal, Reader
from api.errors import ApiError, envelope, not_found
from api.ingest import EventStore, accepted_response
from api.queries.deliveries import attempts_of, delivery_fields
from api.queries.events import EventQuery, event_page
from api.queries.keyset import check_time_range
from api.queries.schemas import EventPage
from api.route_verdicts import load_routes, route_verdicts
from api.routes._common import MAX_PAGE
from api.schemas import (
    DeliveryOut,
    Envelope,
    EventAccepted,
    EventOut,
    NoDeliveriesOut,
    PipelineEventIn,
    ReleaseEventIn,
    RouteVerdictOut,
    error_responses,
)
from shared.db.models import IDEMPOTENCY_KEY_MAX_CHARS, LIFECYCLE_KEY_MAX_CHARS, SEVERITIES, Delivery, Event
from shared.events import (
    pipeline_lifecycle_key,
    pipeline_severity,
    release_lifecycle_key,
    release_severity,
)
from shared.routing import EVENT_KINDS

router = APIRouter(
    prefix="/v1/events", tags=["events"], responses=error_responses(400, 401, 403, 413, 415, 422, 503)
)

EventKind = Literal["release", "pipeline", "incident", "thing", "message", "herald"]
EventSeverity = Literal["info", "warning", "error", "critical"]
assert set(get_args(EventKind)) == set(EVENT_KINDS) and set(get_args(EventSeverity)) == set(SEVERITIES)

IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=IDEMPOTENCY_KEY_MAX_CHARS)]


def _op_id(header_key: str | None, body_key: str | None) -> str:
    if header_key is not None and body_key is not None and header_key != body_key:
        raise ApiError(422, "idempotency_key_mismatch", "Idempotency-Key header and op_id differ")
    key = header_key or body_key
    if key is not None and not (0 < len(key) <= IDEMPOTENCY_KEY_MAX_CHARS and key.isprintable()):
        raise ApiError(
            422,
            "invalid_idempotency_key",
            f"Idempotency-Key must be 1-{IDEMPOTENCY_KEY_MAX_CHARS} printable characters",
        )
    return key or uuid.uuid4().hex


async def ingest_principal(request: Request) -> Principal:
    store: EventStore = request.app.state.event_store
    return await store.principal(request)


IngestPrincipal = Annotated[Principal, Depends(ingest_principal)]


async def _accept(
    request: Request,
    *,
    kind: str,
    event_type: str,
    payload: dict[str, Any],
    severity: str,
    lifecycle_key: str,
    op_id: str,
) -> Response:
    store: EventStore = request.app.state.event_store
    event_id, duplicate = await store.accept(
        kind=kind,
        event_type=event_type,
        payload=payload,
        severity=severity,
        lifecycle_key=lifecycle_key,
        op_id=op_id,
    )
    if not duplicate:
        request.app.state.enqueuer.fanout(str(event_id))
    return accepted_response(event_id, op_id, duplicate)


@router.post(
    "/release", status_code=202, response_model=Envelope[EventAccepted], responses=error_responses(409)
)
async def post_release_event(
    body: ReleaseEventIn,
    request: Request,
    principal: IngestPrincipal,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    principal.require("ingest")
    principal.require_project(body.project)
    op_id = _op_id(idempotency_key, body.op_id)
    payload = body.model_dump(mode="json", exclude={"op_id"}, exclude_none=True)
    return await _accept(
        request,
        kind="release",
        event_type=body.type,
        payload=payload,
        severity=release_severity(body.type, payload),
        lifecycle_key=release_lifecycle_key(payload),
        op_id=op_id,
    )


@router.post(
    "/pipeline", status_code=202, response_model=Envelope[EventAccepted], responses=error_responses(409)
)
async def post_pipeline_event(
    body: PipelineEventIn,
    request: Request,
    principal: IngestPrincipal,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    principal.require("ingest")
    principal.require_project(body.project)
    op_id = _op_id(idempotency_key, body.op_id)
    payload = body.model_dump(mode="json", exclude={"op_id"}, exclude_none=True)
    return await _accept(
        request,
        kind="pipeline",
        event_type=f"pipeline.{body.stage}",
        payload=payload,
        severity=pipeline_severity(body.stage),
        lifecycle_key=pipeline_lifecycle_key(payload),
        op_id=op_id,
    )


INGEST_KINDS = ("release", "pipeline", "alertmanager")  # alertmanager: api/routes/alertmanager.py


@router.post("/{kind}", include_in_schema=False)
def post_unknown_kind(kind: str) -> None:
    """Without this, `POST /v1/events/deploy` matches `GET /v1/events/{event_id}` and answers 405, which reads as
    "wrong method" when the kind is what is wrong."""
    raise ApiError(
        404,
        "unknown_event_kind",
        f"unknown event kind {kind[:64]!r}; post to one of: "
        + ", ".join(f"/v1/events/{k}" for k in INGEST_KINDS),
    )


def _why_no_deliveries(session: Session, event: Event) -> NoDeliveriesOut:
    routes, integrations = load_routes(session)
    verdicts = route_verdicts(event.facts(), routes, integrations)
    shown = [
        RouteVerdictOut(
            route_id=v.route.id,
            integration_id=v.integration.id,
            integration_name=v.integration.name,
            reason=v.reason or ("integration is disabled" if not v.integration.enabled else None),
        )
        for v in verdicts
    ]
    if event.fanned_out_at is None:
        return NoDeliveriesOut(
            code="not_fanned_out",
            message="not fanned out yet: the workers have not planned its deliveries (the sweeper retries)",
            routes=shown,
        )
    if not routes:
        return NoDeliveriesOut(
            code="no_routes", message="no route exists; add one with POST /v1/routes", routes=shown
        )
    matched = [v for v in verdicts if v.would_deliver is not None]
    if not matched:
        reasons = "; ".join(f"{v.integration.name}: {v.reason}" for v in verdicts[:5])
        return NoDeliveriesOut(
            code="no_route_matches", message=f"no route matches this event ({reasons})", routes=shown
        )
    if all(v.would_deliver == "skipped" for v in matched):
        names = ", ".join(v.integration.name for v in matched)
        return NoDeliveriesOut(
            code="integration_disabled",
            message=f"the matching integrations are disabled ({names}); enable them and redrive skipped",
            routes=shown,
        )
    return NoDeliveriesOut(
        code="routes_changed",
        message="a route matches now that did not when the event was fanned out (routes changed since)",
        routes=shown,
    )


def event_detail(session: Session, principal: Principal, event_id: uuid.UUID) -> EventOut:
    """One event with every delivery and attempt (the API's event view and the console's timeline)."""
    event = session.get(Event, event_id)
    # A key bound to another project learns nothing, not even that the event exists: the same 404.
    if event is None or not principal.may_see_project(event.project):
        raise not_found("event")
    deliveries = list(
        session.scalars(
            select(Delivery).where(Delivery.event_id == event_id).order_by(Delivery.created_at, Delivery.id)
        )
    )
    attempts = attempts_of(session, [d.id for d in deliveries])
    return EventOut(
        id=event.id,
        kind=event.kind,
        type=event.type,
        project=event.project,
        environment=event.environment,
        severity=event.severity,
        payload=event.payload,
        created_at=event.created_at,
        fanned_out_at=event.fanned_out_at,
        deliveries=[DeliveryOut(**delivery_fields(d, attempts)) for d in deliveries],
        no_deliveries=None if deliveries else _why_no_deliveries(session, event),
    )


@router.get("", response_model=Envelope[EventPage])
def list_events(
    session: DbSession,
    _: Reader,
    project: Annotated[str | None, Query(max_length=100)] = None,
    kind: Annotated[EventKind | None, Query()] = None,
    type: Annotated[str | None, Query(max_length=64)] = None,
    environment: Annotated[str | None, Query(max_length=100)] = None,
    severity: Annotated[EventSeverity | None, Query()] = None,
    since: Annotated[datetime | None, Query(description="created at or after (ISO 8601 with zone)")] = None,
    until: Annotated[datetime | None, Query(description="created before (ISO 8601 with zone)")] = None,
    q: Annotated[
        str | None,
        Query(
            max_length=LIFECYCLE_KEY_MAX_CHARS, description="event id, lifecycle key, or op id (with project)"
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    """Events newest first, each with its deliveries counted by state. Page with `next_cursor`."""
    check_time_range(since, until)
    query = EventQuery(
        project=project,
        kind=kind,
        type=type,
        environment=environment,
        severity=severity,
        since=since,
        until=until,
        text=q,
    )
    return envelope(event_page(session, query, limit=limit, cursor=cursor).model_dump(mode="json"))


@router.get("/{event_id}", response_model=Envelope[EventOut], responses=error_responses(404))
def get_event(event_id: uuid.UUID, session: DbSession, principal: Authenticated) -> dict[str, Any]:
    return envelope(event_detail(session, principal, event_id).model_dump(mode="json"))
