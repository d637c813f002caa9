"""Rendering console pages: the Jinja2 environment, the context every page gets (who is signed in, the CSRF
token, the health header, flash messages, the nav), flash messages across a redirect, and the errors a console
route raises (rendered as pages, not as the JSON API's envelopes).

A page handler calls `render(request, user, "name.html", {...})`; a form handler answers
`redirect(url, flash=("ok", "Saved"))` (POST, redirect, GET) or re-renders its form with the API's 422 message.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import orjson
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError

from api.errors import ApiError
from api.validation import field_error

if TYPE_CHECKING:
    from api.console.session import ConsoleUser
    from api.metrics import SystemState


HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=HERE / "templates")

FLASH_COOKIE = "herald_console_flash"
MAX_FLASH_CHARS = 500
FlashLevel = Literal["ok", "error", "info"]


@dataclass(frozen=True)
class NavItem:
    label: str
    path: str


# The console's pages, in nav order. A page not built yet answers 404 from its link; the nav stays stable.
NAV: tuple[NavItem, ...] = (
    NavItem("Integrations", "/console/integrations"),
    NavItem("Notifications", "/console/notifications"),
    NavItem("Dead letters", "/console/dead-letters"),
    NavItem("Events", "/console/events"),
    NavItem("Incidents", "/console/incidents"),
    NavItem("Channels", "/console/channels"),
    NavItem("API keys", "/console/keys"),
)


_ERROR_CODES = {400: "bad_request", 403: "forbidden", 404: "not_found", 409: "conflict", 422: "invalid_field"}


class ConsoleError(Exception):
    """An error a console route shows as a page (status, a title and a message safe to show)."""

    def __init__(
        self,
        status_code: int,
        title: str,
        message: str,
        *,
        user: ConsoleUser | None = None,
        error_code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.title = title
        self.message = message
        #: for a script's fetch (answered as the API's JSON envelope): machine-readable, like the API's
        self.error_code = error_code or _ERROR_CODES.get(status_code, "console_error")
        #: who was signed in, if known: the error page then keeps the nav and the health header
        self.user = user


class LoginRequired(Exception):
    """No valid session: the page redirects to the login form (and back after signing in)."""


def health(request: Request) -> SystemState:
    """The header's figures: the same reads, and the same refresh interval, as `/metrics` (api/metrics.py)."""
    state: SystemState = request.app.state.state_gauges.snapshot(request.app.state.sessions)
    return state


def _read_flashes(request: Request) -> list[tuple[str, str]]:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return []
    try:
        items = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        return [(str(level), str(text)[:MAX_FLASH_CHARS]) for level, text in items][:5]
    except (ValueError, TypeError, orjson.JSONDecodeError):
        return []


def set_flash(response: Any, level: FlashLevel, text: str) -> None:
    """A message for the next page this browser renders (after a redirect)."""
    value = base64.urlsafe_b64encode(orjson.dumps([[level, text[:MAX_FLASH_CHARS]]])).decode().rstrip("=")
    response.set_cookie(FLASH_COOKIE, value, max_age=120, path="/console", httponly=True, samesite="lax")


def redirect(url: str, *, flash: tuple[FlashLevel, str] | None = None) -> RedirectResponse:
    """303 See Other: the browser GETs `url` after a form POST (a reload does not resubmit)."""
    response = RedirectResponse(url, status_code=303)
    if flash is not None:
        set_flash(response, *flash)
    return response


def render(
    request: Request,
    user: ConsoleUser | None,
    name: str,
    context: dict[str, Any] | None = None,
    *,
    status_code: int = 200,
    flashes: list[tuple[str, str]] | None = None,
) -> HTMLResponse:
    """A page, with everything base.html needs. `flashes` adds messages to those carried by the cookie."""
    shown = _read_flashes(request) + list(flashes or [])
    page: dict[str, Any] = {
        "user": user,
        "csrf_token": user.csrf_token if user is not None else "",
        "health": health(request) if user is not None else None,
        "flashes": shown,
        "nav": NAV,
        "current_path": request.url.path,
        **(context or {}),
    }
    response = templates.TemplateResponse(request, name, page, status_code=status_code)
    if request.cookies.get(FLASH_COOKIE):
        response.delete_cookie(FLASH_COOKIE, path="/console")
    # Console pages are per user and hold a CSRF token: never cached, never framed.
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        f"frame-ancestors 'none'; form-action {_form_targets(request)}"
    )
    response.headers["Referrer-Policy"] = "same-origin"
    return response


def _form_targets(request: Request) -> str:
    """Where a console form may lead: this site, and the OAuth vendors' authorize pages (the Connect button's
    answer redirects there, and form-action covers redirects)."""
    settings = request.app.state.settings
    origins = ["'self'"]
    for url in (settings.slack_authorize_url, settings.discord_authorize_url):
        parts = urlsplit(url)
        if parts.scheme in ("http", "https") and parts.netloc:
            origins.append(f"{parts.scheme}://{parts.netloc}")
    return " ".join(dict.fromkeys(origins))


def error_page(request: Request, exc: ConsoleError) -> HTMLResponse:
    return render(
        request,
        exc.user,
        "error.html",
        {"title": exc.title, "message": exc.message},
        status_code=exc.status_code,
    )


def field_errors(exc: ApiError) -> dict[str, str]:
    """The API's 422 message by form field: "config.webhook_url: ..." is shown under `webhook_url`.

    The API says which field in the message prefix (`field: message`); that is the one rule, read here."""
    field, sep, message = exc.message.partition(": ")
    if not sep:
        return {"_form": exc.message}
    leaf = field.removeprefix("config.").removeprefix("event.").split(".")[0]
    return {leaf: message, "_form": exc.message}


def validation_error(exc: ValidationError) -> ApiError:
    """A form's pydantic error as the JSON API words its 422 (`field: message`): api/validation.py's rule."""
    code, message = field_error(exc.errors())
    return ApiError(422, code, message)
