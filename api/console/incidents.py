"""The Incidents page: incidents (PushGo Events) and things, with filters, and one lifecycle's current state
and history (every dispatch with its deliveries and attempts), from the API's own incident queries
(api/routes/incidents.py: `lifecycle_page`, `lifecycle_detail`)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from api.console.forms import text
from api.console.listing import PAGE_SIZE, integration_names, page_limit, paging
from api.console.pages import ConsoleError, field_errors, render
from api.console.session import Viewer
from api.deps import DbSession
from api.errors import ApiError
from api.routes.incidents import lifecycle_detail, lifecycle_page
from shared.events import GATEWAY_SEVERITIES

router = APIRouter(prefix="/incidents")

KINDS = {"incident": "Incidents", "thing": "Things"}
OPEN_CHOICES = {"": None, "open": True, "closed": False}


@router.get("", response_class=HTMLResponse, response_model=None)
def incidents_page(
    request: Request,
    session: DbSession,
    user: Viewer,
    kind: str = "incident",
    channel: str = "",
    project: str = "",
    state: str = "",
    severity: str = "",
    object_id: Annotated[str, Query(alias="id", max_length=64)] = "",
    cursor: str | None = None,
    limit: int = PAGE_SIZE,
) -> Response:
    kind = kind if kind in KINDS else "incident"
    values = {
        "channel": channel[:64],
        "project": project[:100],
        "state": state[:8],
        "severity": severity[:16],
    }
    errors: dict[str, str] = {}
    page = None
    try:
        if text(object_id) is not None:
            # an id goes straight to its page (the same lookup and visibility rule as GET /v1/incidents/{id})
            found = lifecycle_detail(session, user.principal, kind, object_id.strip())
            return RedirectResponse(f"/console/incidents/{kind}/{quote(found.id, safe='')}", status_code=303)
        if values["state"] not in OPEN_CHOICES:
            raise ApiError(422, "invalid_field", "state: choose open or closed")
        if values["severity"] and values["severity"] not in GATEWAY_SEVERITIES:
            raise ApiError(
                422, "invalid_field", f"severity: Input should be one of {', '.join(GATEWAY_SEVERITIES)}"
            )
        page = lifecycle_page(
            session,
            user.principal,
            kind,
            channel=text(values["channel"]),
            project=text(values["project"]),
            is_open=OPEN_CHOICES[values["state"]],
            severity=text(values["severity"]) if kind == "incident" else None,
            cursor=cursor,
            limit=page_limit(limit),
        )
    except ApiError as exc:
        if exc.status_code == 404:
            exc = ApiError(422, "not_found", f"id: no {kind} has this id")
        errors = field_errors(exc)
    query = {"kind": kind, **{k: v for k, v in values.items() if v}}
    return render(
        request,
        user,
        "incidents.html",
        {
            "kind": kind,
            "kinds": KINDS,
            "v": {**values, "id": object_id},
            "errors": errors,
            "page": page,
            "severities": GATEWAY_SEVERITIES,
            **paging("/console/incidents", query, page.next_cursor if page else None, cursor),
        },
        status_code=422 if errors else 200,
    )


@router.get("/{kind}/{object_id}", response_class=HTMLResponse)
def lifecycle_page_view(
    kind: str, object_id: str, request: Request, session: DbSession, user: Viewer
) -> HTMLResponse:
    if kind not in KINDS:
        raise ConsoleError(404, "Not found", "No such page.", user=user)
    try:
        detail = lifecycle_detail(session, user.principal, kind, object_id[:64])
    except ApiError:
        raise ConsoleError(404, f"{kind.title()} not found", f"No {kind} has this id.", user=user) from None
    names = integration_names(
        session, {d.integration_id for dispatch in detail.dispatches for d in dispatch.deliveries}
    )
    return render(
        request,
        user,
        "incident.html",
        {
            "item": detail,
            "kind": kind,
            "names": names,
            "attrs": orjson.dumps(detail.attrs, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode(),
            "fields_json": lambda f: orjson.dumps(f, option=orjson.OPT_SORT_KEYS).decode(),
        },
    )
