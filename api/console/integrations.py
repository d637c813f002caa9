"""The Integrations page (seed 001): a tile per provider (OAuth connect for Slack and Discord, a form generated
from the config schema for the rest), the connected-destinations table (status badge, Enabled toggle, Test
button), and each integration's page (edit form, Recent deliveries with every attempt, delete).

Every change goes through the JSON API's own route functions (api/routes/integrations.py, oauth.py): the same
validation, encryption, masking and redrive; a 422 comes back as the field's message under the field.
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import ValidationError

from api.console.config_form import FormValueError, config_from_form, fields_of
from api.console.pages import ConsoleError, field_errors, redirect, render, validation_error
from api.console.session import Editor, Viewer
from api.deps import DbSession
from api.errors import ApiError
from api.routes import deliveries as deliveries_api
from api.routes import integrations as integrations_api
from api.routes import oauth as oauth_api
from api.schemas import IntegrationIn, IntegrationPatch
from providers import registry

router = APIRouter(prefix="/integrations")

PROVIDER_LABELS = {
    "slack": ("Slack", "Post to a channel through an incoming webhook."),
    "slack_bot": ("Slack (bot token)", "Post and edit messages in place with a bot token."),
    "discord": ("Discord", "Post to a channel through a Discord webhook."),
    "teams": ("Microsoft Teams", "A Workflows or connector webhook."),
    "webhook": ("Custom webhook", "Signed JSON (Standard Webhooks) or your own template."),
    "pagerduty": ("PagerDuty", "Trigger and resolve incidents (Events API v2)."),
    "smtp": ("Email (SMTP)", "Send email through your SMTP server."),
    "ses": ("Email (Amazon SES)", "Send email through Amazon SES."),
    "apns": ("Apple push (APNs)", "Push to iOS devices with a .p8 key."),
    "fcm": ("Firebase push (FCM)", "Push to Android and web through FCM."),
}
OAUTH_VENDORS = ("slack", "discord")
TERMINAL = ("delivered", "dead", "skipped", "superseded")
_SAFE_DETAIL = re.compile(r"^[\w .,:;'()/#-]{1,300}$")
OAUTH_ERRORS = {
    "oauth_denied": "The connect was cancelled at the vendor; nothing was saved.",
    "oauth_exchange_failed": "The vendor refused the connect; nothing was saved.",
    "oauth_invalid_webhook": "The vendor returned a webhook Herald cannot use; nothing was saved.",
    "invalid_state": "The connect expired or was started in another browser; start it again.",
    "oauth_not_configured": "OAuth for this vendor is not configured on this Herald.",
}


def label_of(provider: str) -> str:
    return PROVIDER_LABELS.get(provider, (provider, ""))[0]


def _oauth_ready(request: Request, vendor: str) -> bool:
    settings = request.app.state.settings
    return bool(getattr(settings, f"{vendor}_client_id") and getattr(settings, f"{vendor}_client_secret"))


def _uuid(value: str, what: str = "integration") -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise ConsoleError(404, "Not found", f"There is no {what} {value[:40]!r}.") from None


def _api(call: Any, *args: Any) -> dict[str, Any]:
    """A JSON API route function's data; an API error other than a 422 becomes an error page."""
    try:
        result: dict[str, Any] = call(*args)["data"]
        return result
    except ApiError as exc:
        if exc.status_code == 422:
            raise
        raise ConsoleError(exc.status_code, "Could not do that", exc.message) from None


def delivery_status(d: dict[str, Any]) -> dict[str, Any]:
    """What the Test button's row shows for a delivery: done once terminal; the vendor's error as it comes."""
    state = d["state"]
    attempts = d.get("attempts") or []
    last = attempts[-1] if attempts else None
    detail = d.get("last_error_detail") or d.get("dead_reason") or ""
    error = f"{d.get('last_error_class') or 'error'}: {detail}".strip(": ")
    if state == "delivered":
        took = f", {last['duration_ms']:.0f} ms" if last else ""
        code = f"HTTP {last['status_code']}" if last and last.get("status_code") else "sent"
        message, level = f"Delivered ({code}{took}).", "ok"
    elif state == "dead":
        message, level = f"Failed: {error}", "error"
    elif state == "retrying":
        message, level = f"Attempt {d['attempt_count']} failed ({error}); retrying…", "error"
    elif state == "skipped":
        message, level = "Skipped: the integration is disabled.", "info"
    elif state == "superseded":
        message, level = "Superseded by a newer message.", "info"
    else:
        message, level = "Sending…", "info"
    return {"state": state, "done": state in TERMINAL, "message": message, "level": level}


def _oauth_flash(request: Request, session: DbSession, user: Any) -> list[tuple[str, str]]:
    params = request.query_params
    if connected := params.get("connected"):
        try:
            row = _api(integrations_api.get_integration, _uuid(connected), request, session, user.principal)
        except ConsoleError:
            return []
        return [("ok", f"Connected {label_of(row['provider'])}: {row['name']}.")]
    if code := params.get("oauth_error"):
        text = OAUTH_ERRORS.get(code, "The connect failed; nothing was saved.")
        detail = params.get("detail", "")
        if _SAFE_DETAIL.match(detail):
            text += f" ({detail})"
        return [("error", text)]
    return []


@router.get("", response_class=HTMLResponse)
def integrations_page(
    request: Request,
    session: DbSession,
    user: Viewer,
    tested: Annotated[str | None, Query(max_length=40)] = None,
) -> HTMLResponse:
    rows = _api(integrations_api.list_integrations, request, session, user.principal, None, None, None)
    results: dict[str, dict[str, Any]] = {}
    if tested:
        # The Test button without JavaScript: the result (or "Sending…", with a link to look again) on its row.
        try:
            d = _api(deliveries_api.get_delivery, _uuid(tested, "delivery"), session, user.principal)
            results[str(d["integration_id"])] = {**delivery_status(d), "delivery_id": d["id"]}
        except ConsoleError:
            pass
    tiles = [
        {
            "provider": p,
            "label": label_of(p),
            "blurb": PROVIDER_LABELS.get(p, ("", ""))[1],
            "oauth": p in OAUTH_VENDORS,
            "oauth_ready": p in OAUTH_VENDORS and _oauth_ready(request, p),
        }
        # the seed's order (chat first, then webhooks, incidents, email, push); a provider added later comes last
        for p in sorted(
            registry.names(),
            key=lambda p: (list(PROVIDER_LABELS).index(p) if p in PROVIDER_LABELS else 99, p),
        )
    ]
    return render(
        request,
        user,
        "integrations.html",
        {"integrations": rows, "tiles": tiles, "results": results, "label_of": label_of},
        flashes=_oauth_flash(request, session, user),
    )


@router.post("/connect/{vendor}")
def connect(
    vendor: str,
    request: Request,
    session: DbSession,
    user: Editor,
    name: Annotated[str, Form(max_length=100)] = "",
    project: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    """OAuth connect: the API's own start (state stored server-side, bound to this browser), answering back here."""
    if vendor not in OAUTH_VENDORS:
        raise ConsoleError(404, "Not found", f"{vendor[:32]!r} has no OAuth connect; use its form.")
    try:
        return oauth_api.begin_connect(
            request.app.state.settings,
            session,
            user.principal.key_id,
            vendor,
            name.strip() or None,
            project.strip() or None,
            back_to_console=True,
        )
    except ApiError as exc:
        return redirect("/console/integrations", flash=("error", exc.message))


def _form_page(
    request: Request,
    user: Any,
    provider: str,
    *,
    integration: dict[str, Any] | None = None,
    values: dict[str, Any] | None = None,
    top: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
    extra: dict[str, Any] | None = None,
) -> HTMLResponse:
    return render(
        request,
        user,
        "integration_form.html" if integration is None else "integration.html",
        {
            "provider": provider,
            "provider_label": label_of(provider),
            "fields": fields_of(provider),
            "integration": integration,
            # the config as typed (after a 422) or as the API shows it (masked secrets are hints, not values)
            "values": values or {},
            "top": top or {},
            "errors": errors or {},
            **(extra or {}),
        },
        status_code=status_code,
    )


def _known_provider(provider: str) -> str:
    if provider not in registry.PROVIDERS:
        raise ConsoleError(404, "Not found", f"There is no provider {provider[:32]!r}.")
    return provider


@router.get("/new/{provider}", response_class=HTMLResponse)
def new_integration_form(provider: str, request: Request, user: Viewer) -> HTMLResponse:
    _known_provider(provider)
    return _form_page(request, user, provider, top={"enabled": True})


def _top_fields(form: Any) -> dict[str, Any]:
    return {
        "name": str(form.get("name") or "").strip(),
        "project": str(form.get("project") or "").strip(),
        "enabled": form.get("enabled") == "on",
        "retry_max_retries": str(form.get("retry_max_retries") or "").strip(),
        "retry_base_delay_s": str(form.get("retry_base_delay_s") or "").strip(),
    }


def _number(raw: str) -> Any:
    if not raw:
        return None
    for parse in (int, float):
        try:
            return parse(raw)
        except ValueError:
            continue
    return raw  # the API's validation words the problem


@router.post("/new/{provider}", response_class=HTMLResponse)
async def create_integration(provider: str, request: Request, session: DbSession, user: Editor) -> Response:
    _known_provider(provider)
    form = await request.form()
    top = _top_fields(form)
    try:
        config, typed = config_from_form(provider, form, editing=False)
    except FormValueError as exc:
        return _form_page(
            request, user, provider, values={}, top=top, errors={exc.field: exc.message}, status_code=422
        )
    try:
        body = IntegrationIn.model_validate(
            {
                "name": top["name"],
                "provider": provider,
                "project": top["project"] or None,
                "enabled": top["enabled"],
                "config": config,
                "retry_max_retries": _number(top["retry_max_retries"]),
                "retry_base_delay_s": _number(top["retry_base_delay_s"]),
            }
        )
        created = _api(integrations_api.create_integration, body, request, session, user.principal)
    except (ValidationError, ApiError) as exc:
        err = validation_error(exc) if isinstance(exc, ValidationError) else exc
        return _form_page(
            request, user, provider, values=typed, top=top, errors=field_errors(err), status_code=422
        )
    return redirect(
        f"/console/integrations/{created['id']}",
        flash=("ok", f"Saved {created['name']}. Press Test to send a [TEST] notification."),
    )


def _integration_page(
    request: Request,
    session: DbSession,
    user: Any,
    integration_id: uuid.UUID,
    *,
    values: dict[str, Any] | None = None,
    top: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
    cursor: str | None = None,
    state: str | None = None,
) -> HTMLResponse:
    integration = _api(integrations_api.get_integration, integration_id, request, session, user.principal)
    page = _api(
        integrations_api.recent_deliveries, integration_id, session, user.principal, state, 20, cursor
    )
    shown = values if values is not None else integration["config"]
    return _form_page(
        request,
        user,
        integration["provider"],
        integration=integration,
        values=shown,
        top=top or {**integration, "project": integration["project"] or ""},
        errors=errors,
        status_code=status_code,
        extra={
            "deliveries": page["items"],
            "next_cursor": page["next_cursor"],
            "state_filter": state or "",
            "masked": integration["config"],
        },
    )


@router.get("/{integration_id}", response_class=HTMLResponse)
def integration_page(
    integration_id: str,
    request: Request,
    session: DbSession,
    user: Viewer,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    state: Annotated[
        str | None, Query(pattern="^(|pending|sending|retrying|delivered|dead|skipped)$")
    ] = None,
) -> HTMLResponse:
    return _integration_page(
        request, session, user, _uuid(integration_id), cursor=cursor, state=state or None
    )


@router.post("/{integration_id}", response_class=HTMLResponse)
async def save_integration(
    integration_id: str, request: Request, session: DbSession, user: Editor
) -> Response:
    """Save the form (PATCH): an empty secret keeps the stored one. Any config save drains the dead letters."""
    iid = _uuid(integration_id)
    current = _api(integrations_api.get_integration, iid, request, session, user.principal)
    form = await request.form()
    top = _top_fields(form)
    try:
        config, typed = config_from_form(current["provider"], form, editing=True)
    except FormValueError as exc:
        return _integration_page(
            request, session, user, iid, values={}, top=top, errors={exc.field: exc.message}, status_code=422
        )
    try:
        body = IntegrationPatch.model_validate(
            {
                "name": top["name"],
                "project": top["project"] or None,
                "enabled": top["enabled"],
                "config": config,
                "retry_max_retries": _number(top["retry_max_retries"]),
                "retry_base_delay_s": _number(top["retry_base_delay_s"]),
            }
        )
        saved = _api(integrations_api.update_integration, iid, body, request, session, user.principal)
    except (ValidationError, ApiError) as exc:
        session.rollback()
        err = validation_error(exc) if isinstance(exc, ValidationError) else exc
        return _integration_page(
            request, session, user, iid, values=typed, top=top, errors=field_errors(err), status_code=422
        )
    if saved.get("redrive_job_id"):
        drained = "its dead letters are being re-queued in the background"
    else:
        n = saved.get("redriven", 0)
        drained = f"{n} dead letter{'s' if n != 1 else ''} re-queued"
    return redirect(f"/console/integrations/{iid}", flash=("ok", f"Saved {saved['name']}; {drained}."))


@router.post("/{integration_id}/enabled")
def set_enabled(
    integration_id: str,
    request: Request,
    session: DbSession,
    user: Editor,
    enabled: Annotated[str, Form(pattern="^(true|false)$")],
) -> Response:
    iid = _uuid(integration_id)
    body = IntegrationPatch(enabled=enabled == "true")
    saved = _api(integrations_api.update_integration, iid, body, request, session, user.principal)
    word = "enabled" if saved["enabled"] else "disabled: its queued deliveries are skipped (replayable)"
    return redirect(f"/console/integrations#row-{iid}", flash=("ok", f"{saved['name']} {word}."))


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


@router.post("/{integration_id}/test")
def test_integration(integration_id: str, request: Request, session: DbSession, user: Editor) -> Response:
    """The Test button: the API's test send; the row shows the outcome (JS polls; without JS, reload)."""
    iid = _uuid(integration_id)
    sent = _api(integrations_api.test_integration, iid, request, session, user.principal)
    delivery_id = sent["delivery_id"]
    if _wants_json(request):
        return JSONResponse(
            {
                "message": "Sending…",
                "level": "info",
                "done": False,
                "delivery_id": delivery_id,
                "poll_url": f"/console/integrations/deliveries/{delivery_id}/status",
            },
            status_code=202,
        )
    return redirect(f"/console/integrations?tested={delivery_id}#row-{iid}")


@router.get("/deliveries/{delivery_id}/status")
def delivery_status_json(delivery_id: str, session: DbSession, user: Viewer) -> JSONResponse:
    d = _api(deliveries_api.get_delivery, _uuid(delivery_id, "delivery"), session, user.principal)
    return JSONResponse(delivery_status(d), headers={"Cache-Control": "no-store"})


@router.post("/{integration_id}/delete")
def delete_integration(integration_id: str, request: Request, session: DbSession, user: Editor) -> Response:
    iid = _uuid(integration_id)
    current = _api(integrations_api.get_integration, iid, request, session, user.principal)
    integrations_api.delete_integration(iid, session, user.principal)
    return redirect("/console/integrations", flash=("ok", f"Deleted {current['name']} and its routes."))
