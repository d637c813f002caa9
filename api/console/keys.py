"""The API keys page: create (the key is shown once, with a copy button), rotate (a new key with the same name
and scopes, the old one revoked), revoke; the service code is api/routes/keys.py's, as the JSON API's."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from api.console.forms import parse
from api.console.pages import ConsoleError, field_errors, redirect, render
from api.console.session import ConsoleUser, Editor, Viewer
from api.deps import DbSession
from api.errors import ApiError
from api.routes.keys import key_list, new_key, revoke, rotate
from api.schemas import ApiKeyCreated, ApiKeyIn

router = APIRouter(prefix="/keys")

SCOPES = ("admin", "read", "ingest")


def _page(
    request: Request,
    session: DbSession,
    user: ConsoleUser,
    *,
    revoked: bool = False,
    typed: dict[str, object] | None = None,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    return render(
        request,
        user,
        "keys.html",
        {
            "keys": key_list(session, include_revoked=revoked),
            "show_revoked": revoked,
            "scopes": SCOPES,
            "typed": typed or {"scopes": []},
            "errors": errors or {},
        },
        status_code=status_code,
    )


def _shown_once(request: Request, user: ConsoleUser, created: ApiKeyCreated, action: str) -> HTMLResponse:
    # In the POST's own answer only (no redirect, no flash cookie; pages are no-store): shown once.
    return render(request, user, "key_secret.html", {"key": created, "action": action})


def _key_id(user: ConsoleUser, key_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(key_id)
    except ValueError:
        raise ConsoleError(404, "API key not found", "No API key has this id.", user=user) from None


@router.get("", response_class=HTMLResponse)
def keys_page(request: Request, session: DbSession, user: Viewer, revoked: bool = False) -> HTMLResponse:
    return _page(request, session, user, revoked=revoked)


@router.post("", response_class=HTMLResponse)
def create(
    request: Request,
    session: DbSession,
    user: Editor,
    name: Annotated[str, Form(max_length=200)] = "",
    scopes: Annotated[list[str] | None, Form()] = None,
    project: Annotated[str, Form(max_length=200)] = "",
) -> HTMLResponse:
    typed: dict[str, object] = {"name": name, "scopes": list(scopes or []), "project": project}
    try:
        body = parse(ApiKeyIn, typed)
        created = new_key(session, body.name, body.scopes, body.project)
    except ApiError as exc:
        return _page(
            request, session, user, typed=typed, errors=field_errors(exc), status_code=exc.status_code
        )
    return _shown_once(request, user, created, "created")


@router.post("/{key_id}/rotate", response_class=HTMLResponse)
def rotate_key(key_id: str, request: Request, session: DbSession, user: Editor) -> Response:
    try:
        created = rotate(session, _key_id(user, key_id))
    except ApiError as exc:
        return redirect("/console/keys", flash=("error", exc.message))
    return _shown_once(request, user, created, "rotated")


@router.post("/{key_id}/revoke")
def revoke_key(key_id: str, request: Request, session: DbSession, user: Editor) -> Response:
    try:
        row = revoke(session, _key_id(user, key_id))
    except ApiError:
        raise ConsoleError(404, "API key not found", "No API key has this id.", user=user) from None
    if str(row.id) == user.principal.key_id:
        return redirect("/console/login", flash=("info", "You revoked the key you were signed in with."))
    return redirect("/console/keys", flash=("ok", f"Revoked the key {row.name} ({row.key_prefix}…)."))
