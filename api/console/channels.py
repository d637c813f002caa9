"""The Channels page: the PushGo gateway's credentials. Create (a generated password is shown once, with a copy
button), rotate the password, delete; the service code is api/routes/channels.py's, as the JSON API's."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from api.console.forms import parse
from api.console.pages import ConsoleError, field_errors, redirect, render
from api.console.session import ConsoleUser, Editor, Viewer
from api.deps import DbSession
from api.errors import ApiError
from api.gateway.schemas import ChannelCreated, ChannelIn
from api.routes.channels import delete_live_channel, live_channels, new_channel, rotate_channel

router = APIRouter(prefix="/channels")


def _page(
    request: Request,
    session: DbSession,
    user: ConsoleUser,
    *,
    typed: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    return render(
        request,
        user,
        "channels.html",
        {"channels": live_channels(session), "typed": typed or {}, "errors": errors or {}},
        status_code=status_code,
    )


def _shown_once(request: Request, user: ConsoleUser, created: ChannelCreated, action: str) -> HTMLResponse:
    # Rendered in the answer to the POST (never through a redirect or the flash cookie), with no-store: the
    # password exists in this one response only.
    return render(request, user, "channel_secret.html", {"channel": created, "action": action})


@router.get("", response_class=HTMLResponse)
def channels_page(request: Request, session: DbSession, user: Viewer) -> HTMLResponse:
    return _page(request, session, user)


@router.post("", response_class=HTMLResponse)
def create(
    request: Request,
    session: DbSession,
    user: Editor,
    name: Annotated[str, Form(max_length=200)] = "",
    project: Annotated[str, Form(max_length=200)] = "",
    channel_id: Annotated[str, Form(max_length=200)] = "",
    password: Annotated[str, Form(max_length=500)] = "",
) -> HTMLResponse:
    typed = {"name": name, "project": project, "channel_id": channel_id}  # never the password
    try:
        body = parse(ChannelIn, {**typed, "password": password})
        created = new_channel(session, body)
    except ApiError as exc:
        return _page(
            request, session, user, typed=typed, errors=field_errors(exc), status_code=exc.status_code
        )
    return _shown_once(request, user, created, "created")


@router.post("/{channel_id}/rotate", response_class=HTMLResponse)
def rotate(channel_id: str, request: Request, session: DbSession, user: Editor) -> HTMLResponse:
    try:
        rotated = rotate_channel(request, session, channel_id[:64], None)
    except ApiError:
        raise ConsoleError(404, "Channel not found", "No live channel has this id.", user=user) from None
    return _shown_once(request, user, rotated, "rotated")


@router.post("/{channel_id}/delete")
def delete(channel_id: str, request: Request, session: DbSession, user: Editor) -> Response:
    try:
        delete_live_channel(request, session, channel_id[:64])
    except ApiError:
        raise ConsoleError(404, "Channel not found", "No live channel has this id.", user=user) from None
    return redirect(
        "/console/channels",
        flash=(
            "ok",
            f"Deleted channel {channel_id[:64]}: its calls are refused; its incidents stay readable.",
        ),
    )
