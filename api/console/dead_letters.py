"""The Dead letters page: filters (integration, provider, reason, time range), counts by reason, and bulk
redrive or purge of everything the filter matches (not only the page), through the API's own `run_bulk`:
small sets in the request, large ones as the same background job, whose progress the page polls."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy import select

from api.console.forms import local_value, parse, text, utc_field, uuid_field
from api.console.listing import PAGE_SIZE, page_limit, paging
from api.console.pages import ConsoleError, field_errors, redirect, render
from api.console.session import Editor, Viewer
from api.deps import DbSession
from api.errors import ApiError
from api.queries.dead_letters import dead_letter_filter, dead_letter_page, selection
from api.routes._common import run_bulk
from api.schemas import BulkJobOut, DeadLetterSelect
from providers import registry
from shared import deliveries as deadletters
from shared.db.models import BulkJob, Integration

router = APIRouter(prefix="/dead-letters")

STATE_CHOICES = {"dead": ("dead",), "skipped": ("skipped",), "both": ("dead", "skipped")}


@dataclass
class Filters:
    """The page's filter as typed (strings, to put back in the form) and as the query layer takes it."""

    integration: str = ""
    provider: str = ""
    reason: str = ""
    since: str = ""
    until: str = ""
    state: str = "dead"

    def query(self) -> dict[str, str]:
        return {k: v for k, v in self.__dict__.items() if v and not (k == "state" and v == "dead")}

    def selection_body(self) -> dict[str, Any]:
        """The same filter as the API's DeadLetterSelect body (redrive and purge)."""
        body: dict[str, Any] = {
            "integration_id": text(self.integration),
            "provider": text(self.provider),
            "reason": text(self.reason),
            "since": utc_field("since", self.since),
            "until": utc_field("until", self.until),
            "states": list(STATE_CHOICES.get(self.state, ("dead",))),
        }
        if not any(body[k] for k in ("integration_id", "provider", "reason", "since", "until")):
            body["all"] = True  # no filter: the page shows, and the buttons say, "all N dead letters"
        return body


def _filter(f: Filters) -> deadletters.DeadLetterFilter:
    if f.state not in STATE_CHOICES:
        raise ApiError(422, "invalid_field", "state: choose dead, skipped or both")
    return dead_letter_filter(
        integration_id=uuid_field("integration", f.integration),
        provider=text(f.provider),
        reason=text(f.reason),
        since=utc_field("since", f.since),
        until=utc_field("until", f.until),
        states=STATE_CHOICES[f.state],
    )


def _integrations(session: DbSession) -> list[tuple[uuid.UUID, str, str]]:
    rows = session.execute(
        select(Integration.id, Integration.name, Integration.provider).order_by(Integration.name)
    )
    return [(i, n, p) for i, n, p in rows]


def _job_status(job: BulkJobOut) -> dict[str, Any]:
    verb = "Redrive" if job.action == "redrive" else "Purge"
    done = job.state in ("done", "failed")
    message = f"{verb}: {job.processed} of {job.matched} processed ({job.state})"
    if job.error:
        message += f": {job.error}"
    level = "error" if job.state == "failed" else ("ok" if done else "info")
    return {"message": message, "done": done, "level": level, "processed": job.processed}


def _get_job(session: DbSession, job_id: uuid.UUID) -> BulkJobOut | None:
    row = session.get(BulkJob, job_id)
    return BulkJobOut.model_validate(row, from_attributes=True) if row is not None else None


@router.get("", response_class=HTMLResponse)
def dead_letters_page(
    request: Request,
    session: DbSession,
    user: Viewer,
    integration: str = "",
    provider: str = "",
    reason: str = "",
    since: str = "",
    until: str = "",
    state: str = "dead",
    cursor: str | None = None,
    job: str | None = None,
    limit: int = PAGE_SIZE,
) -> HTMLResponse:
    f = Filters(integration, provider, reason, since, until, state)
    errors: dict[str, str] = {}
    page = None
    try:
        flt = _filter(f)
        page = dead_letter_page(session, flt, limit=page_limit(limit), cursor=cursor)
    except ApiError as exc:
        errors = field_errors(exc)
    integrations = _integrations(session)
    names = {i: n for i, n, _ in integrations}
    job_out = None
    if job:
        try:
            job_out = _get_job(session, uuid.UUID(job))
        except ValueError:
            job_out = None
    query = f.query()
    return render(
        request,
        user,
        "dead_letters.html",
        {
            "f": f,
            "errors": errors,
            "page": page,
            "integration_choices": [(str(i), f"{n} ({p})") for i, n, p in integrations],
            "names": names,
            "providers": registry.names(),
            "bulk": f.selection_body() if page is not None else {},
            "filtered": bool({k for k in query if k != "state"}),
            "job": job_out,
            "job_status": _job_status(job_out) if job_out else None,
            **paging("/console/dead-letters", query, page.next_cursor if page else None, cursor),
            "refresh_url": "/console/dead-letters?" + urlencode(query),
            "reason_url": lambda r: "/console/dead-letters?" + urlencode({**query, "reason": r}),
            "local_value": local_value,
        },
        status_code=422 if errors else 200,
    )


@router.post("/{action}", response_model=None)
def bulk(
    action: str,
    request: Request,
    session: DbSession,
    user: Editor,
    integration: Annotated[str, Form(max_length=64)] = "",
    provider: Annotated[str, Form(max_length=64)] = "",
    reason: Annotated[str, Form(max_length=64)] = "",
    since: Annotated[str, Form(max_length=40)] = "",
    until: Annotated[str, Form(max_length=40)] = "",
    state: Annotated[str, Form(max_length=10)] = "dead",
) -> Response:
    """Redrive or purge everything the filter matches, with the API's selection rules and bulk runner."""
    if action not in ("redrive", "purge"):
        raise ConsoleError(404, "Not found", "No such action on dead letters.", user=user)
    f = Filters(integration, provider, reason, since, until, state)
    back = "/console/dead-letters?" + urlencode(f.query())
    try:
        body = parse(DeadLetterSelect, f.selection_body())
        result = run_bulk(request, session, action, selection(body))
    except ApiError as exc:
        return redirect(back, flash=("error", exc.message))
    if result.job_id is not None:
        target = back + ("&" if f.query() else "") + urlencode({"job": str(result.job_id)})
        verb = "Redriving" if action == "redrive" else "Purging"
        return redirect(target, flash=("info", f"{verb} {result.matched} dead letters in the background."))
    if action == "redrive":
        message = (
            f"Redrove {result.processed} of {result.matched} dead letters: they are queued for delivery."
        )
        if result.processed < result.matched:
            message += " The others belong to a disabled integration and stay dead."
    else:
        message = f"Purged {result.processed} dead letters."
    return redirect(back, flash=("ok", message))


@router.get("/jobs/{job_id}")
def job_status(job_id: uuid.UUID, session: DbSession, user: Viewer) -> JSONResponse:
    """A bulk job's progress for the page's poller (console.js `data-poll-url`)."""
    job = _get_job(session, job_id)
    if job is None:
        return JSONResponse({"message": "No such job.", "done": True, "level": "error"}, status_code=404)
    return JSONResponse(_job_status(job))
