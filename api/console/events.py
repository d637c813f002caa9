"""The Events page: search events (the API's `GET /v1/events` query) and an event's delivery timeline (every
delivery with every attempt: status, duration, error class, redacted excerpt; `GET /v1/events/{id}`)."""

from __future__ import annotations

import uuid

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from api.console.forms import text, utc_field
from api.console.listing import PAGE_SIZE, integration_names, page_limit, paging
from api.console.pages import ConsoleError, field_errors, render
from api.console.session import Viewer
from api.deps import DbSession
from api.errors import ApiError
from api.queries.events import EventQuery, event_page
from api.queries.keyset import check_time_range
from api.routes.events import event_detail
from shared.db.models import SEVERITIES
from shared.routing import EVENT_KINDS

router = APIRouter(prefix="/events")

FIELDS = ("q", "project", "kind", "type", "environment", "severity", "since", "until")


def _query(values: dict[str, str]) -> EventQuery:
    since, until = utc_field("since", values["since"]), utc_field("until", values["until"])
    check_time_range(since, until)
    kind, severity = text(values["kind"]), text(values["severity"])
    if kind is not None and kind not in EVENT_KINDS:
        raise ApiError(422, "invalid_field", f"kind: Input should be one of {', '.join(EVENT_KINDS)}")
    if severity is not None and severity not in SEVERITIES:
        raise ApiError(422, "invalid_field", f"severity: Input should be one of {', '.join(SEVERITIES)}")
    return EventQuery(
        project=text(values["project"]),
        kind=kind,
        type=text(values["type"]),
        environment=text(values["environment"]),
        severity=severity,
        since=since,
        until=until,
        text=text(values["q"]),
    )


@router.get("", response_class=HTMLResponse)
def events_page(
    request: Request,
    session: DbSession,
    user: Viewer,
    q: str = "",
    project: str = "",
    kind: str = "",
    type: str = "",
    environment: str = "",
    severity: str = "",
    since: str = "",
    until: str = "",
    cursor: str | None = None,
    limit: int = PAGE_SIZE,
) -> HTMLResponse:
    values = {
        "q": q[:512],
        "project": project[:100],
        "kind": kind[:16],
        "type": type[:64],
        "environment": environment[:100],
        "severity": severity[:16],
        "since": since[:40],
        "until": until[:40],
    }
    errors: dict[str, str] = {}
    page = None
    try:
        page = event_page(session, _query(values), limit=page_limit(limit), cursor=cursor)
    except ApiError as exc:
        errors = field_errors(exc)
    query = {k: v for k, v in values.items() if v}
    return render(
        request,
        user,
        "events.html",
        {
            "v": values,
            "errors": errors,
            "page": page,
            "kinds": EVENT_KINDS,
            "severities": SEVERITIES,
            **paging("/console/events", query, page.next_cursor if page else None, cursor),
        },
        status_code=422 if errors else 200,
    )


@router.get("/{event_id}", response_class=HTMLResponse)
def event_timeline(event_id: str, request: Request, session: DbSession, user: Viewer) -> HTMLResponse:
    try:
        detail = event_detail(session, user.principal, uuid.UUID(event_id))
    except (ValueError, ApiError):
        raise ConsoleError(404, "Event not found", "No event has this id.", user=user) from None
    names = integration_names(session, {d.integration_id for d in detail.deliveries})
    return render(
        request,
        user,
        "event.html",
        {
            "event": detail,
            "names": names,
            "payload": orjson.dumps(detail.payload, option=orjson.OPT_INDENT_2).decode(),
        },
    )
