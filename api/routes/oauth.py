"""OAuth connect for Slack and Discord (seed 001): "Continue to Slack", pick a channel, done.

`GET /v1/oauth/{provider}/start` (admin key) redirects to the vendor's authorize page with a random `state`.
The state is stored server-side (hashed, in `oauth_state`, with the integration's name and project) and bound
to the browser that started the connect by a cookie only that browser holds (its hash is stored beside the
state). The vendor sends the browser back to `GET /v1/oauth/{provider}/callback?code=...&state=...` (no API
key: the state plus the cookie are the proof it started here); the callback consumes the state once, before
exchanging the code, so a replayed or stolen callback URL is refused, then stores the returned incoming webhook
as an encrypted integration. It adds a route only for the project the start request named: a connect that
named none creates the integration alone, never a catch-all route (add routes with /v1/routes).

- Slack: `oauth.v2.access` (client id/secret, code, redirect_uri) answers `{"ok": true, "incoming_webhook":
  {"url", "channel", ...}}`, or `{"ok": false, "error": "invalid_code"}` with HTTP 200.
- Discord: the token endpoint (`grant_type=authorization_code`, scope `webhook.incoming`) answers
  `{"access_token": ..., "webhook": {"url", "name", ...}}`, or a 4xx `{"error": "invalid_grant"}`.
The access tokens the vendors also return are not kept: Herald only needs the webhook.
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
import urllib.error
import urllib.parse
import urllib.request
import uuid
from datetime import timedelta
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import ValidationError
from sqlalchemy import delete, func
from sqlalchemy.orm import Session

from api.deps import Admin, DbSession
from api.errors import ApiError, envelope
from api.routes._common import integration_outs
from api.schemas import Envelope, IntegrationOut, error_responses
from providers import registry
from providers.base import plain_config
from shared.config import Settings
from shared.crypto import KeyRing
from shared.db.models import Integration, OAuthState, Route
from shared.secrets_at_rest import encrypt_config

router = APIRouter(prefix="/v1/oauth", tags=["oauth"], responses=error_responses(400, 413, 422, 503))

Vendor = Literal["slack", "discord"]
SCOPES = {"slack": "incoming-webhook", "discord": "webhook.incoming"}
MAX_RESPONSE_BYTES = 64 * 1024
_SAFE_CODE = re.compile(r"[^a-z0-9_.-]")


COOKIE_PREFIX = "herald_oauth_"
CONSOLE_PREFIX = "herald_oauth_console_"
CONSOLE_PAGE = "/console/integrations"


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _cookie_name(state_hash: str) -> str:
    # Named after the state, so two connects in flight in one browser do not overwrite each other's cookie.
    return COOKIE_PREFIX + state_hash[:16]


def _invalid_state() -> ApiError:
    return ApiError(
        400,
        "invalid_state",
        "state: unknown, already used, expired, or started in another browser; start the connect again",
    )


def _client(settings: Settings, vendor: str) -> tuple[str, str]:
    client_id = getattr(settings, f"{vendor}_client_id")
    secret = getattr(settings, f"{vendor}_client_secret")
    if not client_id or secret is None:
        raise ApiError(
            409,
            "oauth_not_configured",
            f"{vendor} OAuth is not configured: set HERALD_{vendor.upper()}_CLIENT_ID and _CLIENT_SECRET",
        )
    if vendor not in registry.PROVIDERS:
        raise ApiError(409, "provider_unavailable", f"the {vendor} provider is not installed in this Herald")
    return client_id, secret.get_secret_value()


def _redirect_uri(settings: Settings, vendor: str) -> str:
    return f"{settings.public_base_url.rstrip('/')}/v1/oauth/{vendor}/callback"


@router.get(
    "/{vendor}/start",
    response_class=RedirectResponse,
    status_code=302,
    responses={302: {"description": "to the vendor's authorize page"}, **error_responses(401, 403, 409)},
)
def start(
    vendor: Vendor,
    request: Request,
    session: DbSession,
    principal: Admin,
    name: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
    project: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
) -> RedirectResponse:
    """Redirect to Slack's or Discord's consent page. `name` (default: the channel's) and `project` are kept
    server-side for the callback; with `project` the callback also routes that project's events to the new
    integration, without it no route is created. Sets a cookie that binds the connect to this browser."""
    return begin_connect(request.app.state.settings, session, principal.key_id, vendor, name, project)


def begin_connect(
    settings: Settings,
    session: Session,
    key_id: str,
    vendor: str,
    name: str | None,
    project: str | None,
    *,
    back_to_console: bool = False,
) -> RedirectResponse:
    """The connect's first half, for this route and the console's Connect button (`back_to_console`: the
    callback then sends the browser back to the console's Integrations page instead of answering JSON)."""
    client_id, _ = _client(settings, vendor)
    state, browser = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    state_hash = _digest(state)
    ttl_s = settings.oauth_state_ttl_s
    # Expired states are swept here, where they are made: the table holds only the connects in flight.
    session.execute(delete(OAuthState).where(OAuthState.expires_at < func.now()))
    session.add(
        OAuthState(
            state_hash=state_hash,
            browser_hash=_digest(browser),
            vendor=vendor,
            name=name,
            project=project,
            api_key_id=key_id,
            expires_at=func.now() + timedelta(seconds=ttl_s),
        )
    )
    session.commit()
    query = {
        "client_id": client_id,
        "scope": SCOPES[vendor],
        "redirect_uri": _redirect_uri(settings, vendor),
        "state": state,
    }
    if vendor == "discord":
        query["response_type"] = "code"
    url = getattr(settings, f"{vendor}_authorize_url")
    response = RedirectResponse(f"{url}?{urllib.parse.urlencode(query)}", status_code=302)
    cookie = {
        "max_age": max(1, math.ceil(ttl_s)),
        "path": f"/v1/oauth/{vendor}/callback",
        "secure": settings.public_base_url.startswith("https://"),
        "httponly": True,
        # Lax: sent on the vendor's top-level redirect back to the callback, not on cross-site subrequests.
        "samesite": "lax",
    }
    response.set_cookie(_cookie_name(state_hash), browser, **cookie)  # type: ignore[arg-type]
    if back_to_console:
        # Only where to answer, never a proof: the state and the browser cookie above are the proof.
        response.set_cookie(CONSOLE_PREFIX + state_hash[:16], "1", **cookie)  # type: ignore[arg-type]
    return response


def _consume_state(request: Request, session: DbSession, vendor: str, state: str) -> OAuthState:
    """The stored state, deleted in the same statement (once only), if this browser started it."""
    state_hash = _digest(state)
    browser = request.cookies.get(_cookie_name(state_hash))
    if not browser:
        raise _invalid_state()
    row = session.execute(
        delete(OAuthState)
        .where(
            OAuthState.state_hash == state_hash,
            OAuthState.vendor == vendor,
            OAuthState.browser_hash == _digest(browser),
            OAuthState.expires_at > func.now(),
        )
        .returning(OAuthState)
    ).scalar_one_or_none()
    # Committed before the code is exchanged: a concurrent replay finds nothing to consume.
    session.commit()
    if row is None:
        raise _invalid_state()
    return row


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a token endpoint that redirects is refused, never followed


def _post_form(url: str, fields: dict[str, str], timeout_s: float) -> tuple[int, Any]:
    """POST a form; (status, parsed JSON or None). Connection trouble is a 502 without any detail that could
    carry the client secret."""
    request = urllib.request.Request(  # noqa: S310 (the URL is operator configuration, http(s) only)
        url,
        data=urllib.parse.urlencode(fields).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
        method="POST",
    )
    opener = urllib.request.build_opener(_NoRedirects)
    try:
        with opener.open(request, timeout=timeout_s) as response:
            status, raw = response.status, response.read(MAX_RESPONSE_BYTES)
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read(MAX_RESPONSE_BYTES)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise ApiError(
            502, "oauth_exchange_failed", f"could not reach the token endpoint ({type(exc).__name__})"
        ) from None
    try:
        return status, orjson.loads(raw)
    except orjson.JSONDecodeError:
        return status, None


def _vendor_error(body: Any) -> str:
    code = body.get("error") if isinstance(body, dict) else None
    return _SAFE_CODE.sub("", str(code).lower())[:64] if code else "unexpected answer"


def _exchange(settings: Settings, vendor: str, code: str) -> tuple[str, str | None]:
    """(webhook URL, suggested name) for the code."""
    client_id, client_secret = _client(settings, vendor)
    fields = {
        "client_id": client_id,
        "client_secret": client_secret,
        "code": code,
        "redirect_uri": _redirect_uri(settings, vendor),
    }
    if vendor == "discord":
        fields["grant_type"] = "authorization_code"
    status, body = _post_form(getattr(settings, f"{vendor}_token_url"), fields, settings.oauth_timeout_s)
    ok = status == 200 and isinstance(body, dict) and (vendor != "slack" or body.get("ok") is True)
    if not ok:
        raise ApiError(
            502, "oauth_exchange_failed", f"{vendor} refused the code: {_vendor_error(body)} (HTTP {status})"
        )
    hook = body.get("incoming_webhook" if vendor == "slack" else "webhook")
    url = hook.get("url") if isinstance(hook, dict) else None
    if not isinstance(url, str) or not url:
        raise ApiError(502, "oauth_exchange_failed", f"{vendor} granted no incoming webhook")
    label = hook.get("channel") if vendor == "slack" else hook.get("name")
    return url, str(label)[:100] if label else None


@router.get(
    "/{vendor}/callback",
    status_code=201,
    response_model=Envelope[IntegrationOut],
    responses=error_responses(400, 409, 502),
)
def callback(
    vendor: Vendor,
    request: Request,
    response: Response,
    session: DbSession,
    state: Annotated[str, Query(min_length=1, max_length=2000)],
    code: Annotated[str | None, Query(min_length=1, max_length=2000)] = None,
    error: Annotated[str | None, Query(max_length=200)] = None,
) -> Any:
    """Where the vendor sends the browser back: consume the state, exchange the code, store the webhook
    encrypted, and route the project the start request named (if any). A connect started from the console
    is sent back to the console's Integrations page (with the new integration's id, or the error code)."""
    keyring: KeyRing = request.app.state.keyring
    to_console = request.cookies.get(CONSOLE_PREFIX + _digest(state)[:16]) == "1"
    try:
        row = _complete(request, session, vendor, state, code, error)
    except ApiError as exc:
        if not to_console:
            raise
        back = RedirectResponse(
            f"{CONSOLE_PAGE}?{urllib.parse.urlencode({'oauth_error': exc.error_code, 'detail': exc.message})}",
            status_code=303,
        )
        _forget_cookies(back, vendor, state)
        return back
    if to_console:
        back = RedirectResponse(f"{CONSOLE_PAGE}?connected={row.id}", status_code=303)
        _forget_cookies(back, vendor, state)
        return back
    _forget_cookies(response, vendor, state)
    [out] = integration_outs(session, keyring, [row])
    return envelope(out)


def _forget_cookies(response: Response, vendor: str, state: str) -> None:
    state_hash = _digest(state)
    for name in (_cookie_name(state_hash), CONSOLE_PREFIX + state_hash[:16]):
        response.delete_cookie(name, path=f"/v1/oauth/{vendor}/callback")


def _complete(
    request: Request, session: Session, vendor: str, state: str, code: str | None, error: str | None
) -> Integration:
    settings: Settings = request.app.state.settings
    keyring: KeyRing = request.app.state.keyring
    started = _consume_state(request, session, vendor, state)
    if error is not None or code is None:
        raise ApiError(
            400, "oauth_denied", f"{vendor} did not grant access: {_vendor_error({'error': error})}"
        )
    url, label = _exchange(settings, vendor, code)
    try:
        fields: dict[str, Any] = {"webhook_url": url}
        if vendor == "slack" and label:
            fields["channel"] = label
        config = registry.config_model(vendor).model_validate(fields)
    except ValidationError as exc:
        field = ".".join(str(p) for p in exc.errors()[0]["loc"])
        raise ApiError(
            502, "oauth_invalid_webhook", f"{vendor} returned an unusable webhook ({field})"
        ) from None
    integration_id = uuid.uuid4()
    row = Integration(
        id=integration_id,
        name=started.name or label or f"{vendor} webhook",
        provider=vendor,
        project=started.project,
        enabled=True,
        config_ciphertext=encrypt_config(keyring, integration_id, plain_config(config)),
        config_key_id=keyring.primary_kid,
    )
    session.add(row)
    if started.project is not None:
        session.flush()
        session.add(Route(integration_id=integration_id, project=started.project))
    session.commit()
    session.refresh(row)
    return row
