"""The Notifications page (seed 003's Notifications tab): the routes matrix with filters (project, application,
environment, cluster, pipeline), "all current and future pipelines", event checkboxes, recipients (one or more
integrations), bulk "modify events", "modify recipients" and delete of the selected rows, and the dry-run panel
(`POST /v1/routes/explain`: the message each destination would get for a sample event).

Every change goes through the routes API's own functions (api/routes/routes.py): one route per recipient.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from api.console.integrations import label_of
from api.console.pages import ConsoleError, field_errors, redirect, render, validation_error
from api.console.session import ConsoleUser, Editor, Viewer, require_csrf
from api.deps import DbSession
from api.errors import ApiError
from api.route_schemas import ExplainIn, RouteIn
from api.routes import integrations as integrations_api
from api.routes import routes as routes_api
from shared.events import PIPELINE_TYPES, RELEASE_TYPES

router = APIRouter(prefix="/notifications")

# The event checkboxes: (value stored in route.event_types, label). None checked = every event.
EVENT_GROUPS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("Pipelines", tuple((t, t.split(".", 1)[1].capitalize()) for t in PIPELINE_TYPES)),
    ("Releases", tuple((t, t.split(".", 1)[1].replace("_", " ").capitalize()) for t in RELEASE_TYPES)),
    ("Incidents and gateway", (("incident", "Incidents"), ("thing", "Things"), ("message", "Messages"))),
)
SEVERITIES: tuple[tuple[str, str], ...] = (
    ("info", "Any severity"),
    ("warning", "Warning and above"),
    ("error", "Error and above"),
    ("critical", "Critical only"),
)
SAMPLES = {
    "release": {
        "type": "release.created",
        "project": "ios-app",
        "environment": "production",
        "version": "1.4.2",
        "mandatory": False,
        "description": "Fixes the login crash",
        "url": "https://admin.example/r/142",
    },
    "pipeline": {
        "stage": "failure",
        "project": "ios-app",
        "app": "api",
        "environment": "production",
        "cluster": "eu-1",
        "pipeline": "deploy-prod",
        "pipeline_type": "cd",
        "image_tag": "api:1.4.2",
    },
}
MAX_LIST_ITEMS = 100


@dataclass
class RouteForm:
    """What the add/edit form holds (as typed), and its errors."""

    recipients: list[str] = field(default_factory=list)
    project: str = ""
    environments: str = ""
    apps: str = ""
    clusters: str = ""
    pipelines: str = ""
    all_pipelines: bool = True
    event_types: list[str] = field(default_factory=list)
    min_severity: str = "info"
    edit_in_place: bool = True
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of_route(cls, route: dict[str, Any]) -> RouteForm:
        return cls(
            recipients=[str(route["integration_id"])],
            project=route["project"] or "",
            environments=", ".join(route["environments"]),
            apps=", ".join(route["apps"]),
            clusters=", ".join(route["clusters"]),
            pipelines=", ".join(route["pipelines"]),
            all_pipelines=not route["pipelines"],
            event_types=list(route["event_types"]),
            min_severity=route["min_severity"],
            edit_in_place=route["edit_in_place"],
        )

    def body(self, integration_id: str) -> dict[str, Any]:
        return {
            "integration_id": integration_id,
            "project": self.project or None,
            "environments": _split(self.environments),
            "event_types": self.event_types,
            "min_severity": self.min_severity,
            "apps": _split(self.apps),
            "clusters": _split(self.clusters),
            "pipelines": [] if self.all_pipelines else _split(self.pipelines),
            "edit_in_place": self.edit_in_place,
        }


def _split(text: str) -> list[str]:
    return [v.strip() for v in text.replace("\n", ",").split(",") if v.strip()][: MAX_LIST_ITEMS + 1]


async def _route_form(request: Request) -> RouteForm:
    form = await request.form()
    return RouteForm(
        recipients=[str(v) for v in form.getlist("recipients")],
        project=str(form.get("project") or "").strip(),
        environments=str(form.get("environments") or ""),
        apps=str(form.get("apps") or ""),
        clusters=str(form.get("clusters") or ""),
        pipelines=str(form.get("pipelines") or ""),
        all_pipelines=form.get("all_pipelines") == "on",
        event_types=[str(v) for v in form.getlist("event_types")],
        min_severity=str(form.get("min_severity") or "info"),
        edit_in_place=form.get("edit_in_place") == "on",
    )


def _validated(form: RouteForm, integration_id: str) -> RouteIn:
    """The form as the API's RouteIn, or a 422 in the API's words."""
    try:
        return RouteIn.model_validate(form.body(integration_id))
    except ValidationError as exc:
        raise validation_error(exc) from None


def _matches(route: dict[str, Any], filters: dict[str, str]) -> bool:
    """Whether a route applies to the filter bar's values (an empty route field means all, current and future)."""
    checks = (
        ("project", [route["project"]] if route["project"] else []),
        ("environment", route["environments"]),
        ("app", route["apps"]),
        ("cluster", route["clusters"]),
        ("pipeline", route["pipelines"]),
    )
    return all(not filters.get(k) or not allowed or filters[k] in allowed for k, allowed in checks)


def _integrations(request: Request, session: DbSession, user: ConsoleUser) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = integrations_api.list_integrations(
        request, session, user.principal, None, None, None
    )["data"]
    return rows


def _page(
    request: Request,
    session: DbSession,
    user: ConsoleUser,
    *,
    add: RouteForm | None = None,
    bulk_errors: dict[str, str] | None = None,
    explain: dict[str, Any] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    params = request.query_params
    filters = {
        k: params.get(k, "").strip()[:100] for k in ("project", "app", "environment", "cluster", "pipeline")
    }
    routes = routes_api.list_routes(session, user.principal, None)["data"]
    integrations = _integrations(request, session, user)
    by_id = {i["id"]: i for i in integrations}
    shown = [r for r in routes if _matches(r, filters)]
    return render(
        request,
        user,
        "notifications.html",
        {
            "routes": shown,
            "total": len(routes),
            "filters": filters,
            "integrations": integrations,
            "by_id": by_id,
            "label_of": label_of,
            "event_groups": EVENT_GROUPS,
            "severities": SEVERITIES,
            "add": add or RouteForm(),
            "bulk_errors": bulk_errors or {},
            "explain": explain or _sample(params.get("sample", "release")),
        },
        status_code=status_code,
    )


def _sample(kind: str) -> dict[str, Any]:
    kind = kind if kind in SAMPLES else "release"
    return {"kind": kind, "event": _pretty(SAMPLES[kind])}


def _pretty(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


@router.get("", response_class=HTMLResponse)
def notifications_page(request: Request, session: DbSession, user: Viewer) -> HTMLResponse:
    return _page(request, session, user)


@router.post("", response_class=HTMLResponse)
async def add_notification(request: Request, session: DbSession, user: Editor) -> Response:
    """Add a notification: one route per recipient, all validated before any is stored."""
    form = await _route_form(request)
    if not form.recipients:
        form.errors = {"recipients": "choose at least one recipient"}
        return _page(request, session, user, add=form, status_code=422)
    try:
        bodies = [_validated(form, r) for r in form.recipients]
        for body in bodies:
            routes_api.create_route(body, session, user.principal)
    except ApiError as exc:
        session.rollback()
        form.errors = _route_field_errors(exc)
        return _page(request, session, user, add=form, status_code=422)
    n = len(bodies)
    return redirect("/console/notifications", flash=("ok", f"Added {n} notification{'s' if n != 1 else ''}."))


def _route_field_errors(exc: ApiError) -> dict[str, str]:
    errors = field_errors(exc)
    if "integration_id" in errors:
        errors["recipients"] = errors.pop("integration_id")
    return errors


def _selected(form: Any) -> list[uuid.UUID]:
    out = []
    for value in form.getlist("route_ids"):
        try:
            out.append(uuid.UUID(str(value)))
        except ValueError:
            continue
    return out


def _route(session: DbSession, user: ConsoleUser, route_id: uuid.UUID) -> dict[str, Any]:
    try:
        data: dict[str, Any] = routes_api.get_route(route_id, session, user.principal)["data"]
        return data
    except ApiError:
        raise ConsoleError(404, "Not found", "That notification no longer exists.", user=user) from None


@router.post("/bulk", response_class=HTMLResponse)
async def bulk(request: Request, session: DbSession, user: Editor) -> Response:
    """The selected rows: `action` = events (set their events and severity), recipients (send them to these
    integrations: each route is kept for the first and copied, same filters, for the others), or delete.
    Every new route is validated before any is stored."""
    form = await request.form()
    action = str(form.get("action") or "")
    ids = _selected(form)
    if not ids:
        return _page(
            request,
            session,
            user,
            bulk_errors={"route_ids": "select one or more rows first"},
            status_code=422,
        )
    changes = await _route_form(request)
    current = [_route(session, user, i) for i in ids]
    try:
        if action == "delete":
            for route_id in ids:
                routes_api.delete_route(route_id, session, user.principal)
            return redirect("/console/notifications", flash=("ok", f"Deleted {len(ids)} notification(s)."))
        if action == "events":
            plans = []
            for route in current:
                edited = RouteForm.of_route(route)
                edited.event_types, edited.min_severity = changes.event_types, changes.min_severity
                plans.append((route["id"], _validated(edited, str(route["integration_id"]))))
            for route_id, body in plans:
                routes_api.replace_route(uuid.UUID(str(route_id)), body, session, user.principal)
            return redirect(
                "/console/notifications", flash=("ok", f"Events changed on {len(ids)} notification(s).")
            )
        if action == "recipients":
            if not changes.recipients:
                return _page(
                    request,
                    session,
                    user,
                    bulk_errors={"recipients": "choose at least one recipient"},
                    status_code=422,
                )
            replaced: list[tuple[uuid.UUID, RouteIn]] = []
            copies: list[RouteIn] = []
            for route in current:
                kept = RouteForm.of_route(route)
                first, *others = changes.recipients
                replaced.append((uuid.UUID(str(route["id"])), _validated(kept, first)))
                copies.extend(_validated(kept, other) for other in others)
            for route_id, body in replaced:
                routes_api.replace_route(route_id, body, session, user.principal)
            for body in copies:
                routes_api.create_route(body, session, user.principal)
            return redirect(
                "/console/notifications", flash=("ok", f"Recipients changed on {len(ids)} notification(s).")
            )
    except ApiError as exc:
        session.rollback()
        return _page(request, session, user, bulk_errors=_route_field_errors(exc), status_code=422)
    raise ConsoleError(400, "Unknown action", "Choose Modify events, Modify recipients or Delete.", user=user)


@router.get("/{route_id}", response_class=HTMLResponse)
def route_page(route_id: str, request: Request, session: DbSession, user: Viewer) -> HTMLResponse:
    rid = _uuid(route_id, user)
    route = _route(session, user, rid)
    return _route_page(request, session, user, route, RouteForm.of_route(route))


def _route_page(
    request: Request,
    session: DbSession,
    user: ConsoleUser,
    route: dict[str, Any],
    form: RouteForm,
    status_code: int = 200,
) -> HTMLResponse:
    return render(
        request,
        user,
        "route.html",
        {
            "route": route,
            "add": form,
            "label_of": label_of,
            "integrations": _integrations(request, session, user),
            "event_groups": EVENT_GROUPS,
            "severities": SEVERITIES,
        },
        status_code=status_code,
    )


def _uuid(value: str, user: ConsoleUser) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise ConsoleError(404, "Not found", "That notification does not exist.", user=user) from None


@router.post("/{route_id}", response_class=HTMLResponse)
async def save_route(route_id: str, request: Request, session: DbSession, user: Editor) -> Response:
    rid = _uuid(route_id, user)
    route = _route(session, user, rid)
    form = await _route_form(request)
    if len(form.recipients) != 1:
        form.errors = {"recipients": "choose one recipient (add more from the Notifications page)"}
        return _route_page(request, session, user, route, form, 422)
    try:
        routes_api.replace_route(rid, _validated(form, form.recipients[0]), session, user.principal)
    except ApiError as exc:
        session.rollback()
        form.errors = _route_field_errors(exc)
        return _route_page(request, session, user, route, form, 422)
    return redirect("/console/notifications", flash=("ok", "Notification saved."))


@router.post("/explain/run", response_class=HTMLResponse)
def explain(
    request: Request,
    session: DbSession,
    user: Viewer,
    _: Annotated[None, Depends(require_csrf)],
    kind: Annotated[str, Form(pattern="^(release|pipeline)$")] = "release",
    event: Annotated[str, Form(max_length=20_000)] = "",
) -> HTMLResponse:
    """The dry run (read keys may run it too: nothing is stored or sent)."""
    state: dict[str, Any] = {"kind": kind, "event": event}
    try:
        parsed = orjson.loads(event)
    except orjson.JSONDecodeError as exc:
        state["error"] = f"event: not valid JSON ({exc})"
        return _page(request, session, user, explain=state, status_code=422)
    try:
        body = ExplainIn.model_validate({"kind": kind, "event": parsed})
        state["result"] = routes_api.explain(body, request, session, user.principal)["data"]
    except ValidationError as exc:
        state["error"] = validation_error(exc).message
    except ApiError as exc:
        state["error"] = exc.message
    if "result" in state:
        for r in state["result"]["routes"]:
            r["preview_text"] = _pretty(r["preview"]) if r.get("preview") is not None else None
    return _page(request, session, user, explain=state, status_code=422 if "error" in state else 200)
