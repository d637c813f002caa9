"""Console sign-in: an admin or read API key exchanged for a server-side session, and the dependencies every
console route uses.

- `POST /console/login` checks the key with the API's own lookup (`api.deps.principal_for_key`: no second
  rule), stores a `console_session` row holding only the SHA-256 of a random token, and sets that token as an
  HttpOnly, SameSite=Lax cookie (Secure when `public_base_url` is https). Lax, not Strict: the OAuth connect
  comes back from the vendor as a cross-site navigation and must find the user still signed in. The key is
  never stored, rendered, put in a URL or logged.
- `console_principal(write=...)`: the signed-in user, re-checked against the key on every request (a revoked
  key ends its sessions at once). A read key sees every page and changes nothing: a write answers a 403 page.
- CSRF: the token is derived from the session token (`csrf_token`), sent as the hidden field `csrf_token` of
  every state-changing form or the `X-CSRF-Token` header of a script's fetch, and checked by `require_csrf`,
  which every write dependency includes.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import delete, func, select

from api.console.pages import ConsoleError, LoginRequired, redirect, render
from api.deps import DbSession, Principal, principal_for_key, principal_for_key_id
from shared.db.models import ConsoleSession

router = APIRouter()

SESSION_COOKIE = "herald_console"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
MAX_KEY_CHARS = 200


@dataclass(frozen=True)
class ConsoleUser:
    principal: Principal
    #: the raw session token, from the cookie (never rendered: pages get `csrf_token`)
    token: str

    @property
    def can_write(self) -> bool:
        return "admin" in self.principal.scopes

    @property
    def role(self) -> str:
        return "admin" if self.can_write else "read-only"

    @property
    def csrf_token(self) -> str:
        return csrf_token(self.token)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def csrf_token(session_token: str) -> str:
    """Derived, not stored: knowing it does not reveal the session token (a keyed hash of it)."""
    return hmac.new(session_token.encode(), b"herald-console-csrf", hashlib.sha256).hexdigest()


def _secure(request: Request) -> bool:
    return bool(request.app.state.settings.public_base_url.startswith("https://"))


def _may_use_console(principal: Principal) -> bool:
    return bool({"admin", "read"} & principal.scopes)


def _load_user(request: Request, session: DbSession) -> ConsoleUser:
    token = request.cookies.get(SESSION_COOKIE)
    if not token or len(token) > 100:
        raise LoginRequired
    api_key_id = session.scalar(
        select(ConsoleSession.api_key_id).where(
            ConsoleSession.token_hash == _hash(token), ConsoleSession.expires_at > func.now()
        )
    )
    principal = principal_for_key_id(session, api_key_id) if api_key_id is not None else None
    if principal is None or not _may_use_console(principal):
        raise LoginRequired
    return ConsoleUser(principal, token)


async def require_csrf(request: Request, user: Annotated[ConsoleUser, Depends(_load_user)]) -> None:
    """The one CSRF check: the form field `csrf_token`, or the `X-CSRF-Token` header of a script's fetch."""
    presented = request.headers.get(CSRF_HEADER)
    if presented is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        value = (await request.form()).get(CSRF_FIELD)
        presented = value if isinstance(value, str) else None
    if not presented or not hmac.compare_digest(presented, user.csrf_token):
        raise ConsoleError(
            403,
            "Form expired",
            "This form was not sent by a page of this console session (the CSRF token did not match). "
            "Reload the page and try again.",
            user=user,
            error_code="csrf_failed",
        )


def _reader(user: Annotated[ConsoleUser, Depends(_load_user)]) -> ConsoleUser:
    return user


def _writer(
    user: Annotated[ConsoleUser, Depends(_load_user)], _: Annotated[None, Depends(require_csrf)]
) -> ConsoleUser:
    if not user.can_write:
        raise ConsoleError(
            403,
            "Read-only key",
            "You signed in with a read key: it shows everything and changes nothing. "
            "Sign in with an admin key to make this change.",
            user=user,
            error_code="read_only",
        )
    return user


def console_principal(write: bool = False) -> Callable[..., ConsoleUser]:
    """The dependency of a console route: any signed-in user, or (`write`) an admin, with a valid CSRF token."""
    return _writer if write else _reader


Viewer = Annotated[ConsoleUser, Depends(console_principal(write=False))]
Editor = Annotated[ConsoleUser, Depends(console_principal(write=True))]


def _safe_next(target: str | None) -> str:
    # Only a console path of this site: never an absolute or scheme-relative URL (no open redirect).
    if target and target.startswith("/console/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/console/integrations"


def _same_origin(request: Request) -> bool:
    """Login has no session yet, so no CSRF token: refuse a cross-site form post by the browser's own word."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("origin")
    return origin is None or origin == f"{request.url.scheme}://{request.url.netloc}"


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str | None = None) -> HTMLResponse:
    return render(request, None, "login.html", {"next": _safe_next(next)})


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request,
    session: DbSession,
    api_key: Annotated[str, Form(max_length=MAX_KEY_CHARS)] = "",
    next: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    target = _safe_next(next)
    if not _same_origin(request):
        raise ConsoleError(403, "Sign-in refused", "The sign-in form was sent from another site.")
    principal = principal_for_key(session, api_key.strip())
    error = None
    if principal is None:
        error = "That key is not a valid API key (unknown or revoked). Paste an admin or read key."
    elif not _may_use_console(principal):
        error = "That key has neither the admin nor the read scope; an ingest key cannot sign in here."
    if error is not None or principal is None:
        return render(
            request,
            None,
            "login.html",
            {"next": target, "error": error},
            status_code=401,
        )
    token = secrets.token_urlsafe(32)
    ttl_s = request.app.state.settings.console_session_ttl_s
    # Expired sessions are swept here, where sessions are made (served by console_session_expires_idx).
    session.execute(delete(ConsoleSession).where(ConsoleSession.expires_at < func.now()))
    session.add(
        ConsoleSession(
            token_hash=_hash(token),
            api_key_id=uuid.UUID(principal.key_id),
            expires_at=func.now() + timedelta(seconds=ttl_s),
        )
    )
    session.commit()
    response = redirect(target)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(ttl_s),
        path="/console",
        secure=_secure(request),
        httponly=True,
        samesite="lax",
    )
    return response


@router.post("/logout")
def logout(
    request: Request, session: DbSession, user: Viewer, _: Annotated[None, Depends(require_csrf)]
) -> RedirectResponse:
    """Signing out deletes the server-side session: the cookie is worthless afterwards, even if copied."""
    session.execute(delete(ConsoleSession).where(ConsoleSession.token_hash == _hash(user.token)))
    session.commit()
    response = redirect("/console/login", flash=("info", "Signed out."))
    response.delete_cookie(
        SESSION_COOKIE, path="/console", secure=_secure(request), httponly=True, samesite="lax"
    )
    return response


@router.get("/", include_in_schema=False)
def home(_: Viewer) -> RedirectResponse:
    return RedirectResponse("/console/integrations", status_code=303)
