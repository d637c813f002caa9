"""Routes (which events go to which integration) and the dry run `POST /v1/routes/explain`."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ValidationError
from sqlalchemy import select

from api.deps import Admin, DbSession, Reader
from api.errors import ApiError, envelope, not_found
from api.route_schemas import ExplainIn, ExplainOut, ExplainRoute, RouteIn, RouteOut
from api.route_verdicts import load_routes, route_verdicts
from api.routes._common import stored_config
from api.schemas import Envelope, PipelineEventIn, ReleaseEventIn, error_responses
from providers import registry
from providers.base import secret_values
from shared.db.models import Integration, Route
from shared.events import (
    EventFacts,
    pipeline_lifecycle_key,
    pipeline_severity,
    release_lifecycle_key,
    release_severity,
)
from shared.rendering import render

if TYPE_CHECKING:
    from providers._http import HttpClient

router = APIRouter(
    prefix="/v1/routes", tags=["routes"], responses=error_responses(400, 401, 403, 413, 415, 422, 503)
)


def _route_out(row: Route) -> dict[str, Any]:
    return RouteOut.model_validate(row, from_attributes=True).model_dump(mode="json")


def _check_integration(session: DbSession, body: RouteIn) -> None:
    integration = session.get(Integration, body.integration_id)
    if integration is None:
        raise ApiError(422, "unknown_integration", "integration_id does not name an integration")
    if integration.project is not None and body.project != integration.project:
        raise ApiError(
            422,
            "project_mismatch",
            f"project: the integration is bound to project {integration.project!r}; the route must be too",
        )


@router.post("", status_code=201, response_model=Envelope[RouteOut])
def create_route(body: RouteIn, session: DbSession, _: Admin) -> dict[str, Any]:
    _check_integration(session, body)
    row = Route(**body.model_dump())
    session.add(row)
    session.commit()
    session.refresh(row)
    return envelope(_route_out(row))


@router.get("", response_model=Envelope[list[RouteOut]])
def list_routes(session: DbSession, _: Reader, integration_id: uuid.UUID | None = None) -> dict[str, Any]:
    stmt = select(Route).order_by(Route.created_at, Route.id)
    if integration_id is not None:
        stmt = stmt.where(Route.integration_id == integration_id)
    return envelope([_route_out(r) for r in session.scalars(stmt)])


@router.get("/{route_id}", response_model=Envelope[RouteOut], responses=error_responses(404))
def get_route(route_id: uuid.UUID, session: DbSession, _: Reader) -> dict[str, Any]:
    row = session.get(Route, route_id)
    if row is None:
        raise not_found("route")
    return envelope(_route_out(row))


@router.put("/{route_id}", response_model=Envelope[RouteOut], responses=error_responses(404))
def replace_route(route_id: uuid.UUID, body: RouteIn, session: DbSession, _: Admin) -> dict[str, Any]:
    row = session.get(Route, route_id)
    if row is None:
        raise not_found("route")
    _check_integration(session, body)
    for name, value in body.model_dump().items():
        setattr(row, name, value)
    session.commit()
    session.refresh(row)
    return envelope(_route_out(row))


@router.delete("/{route_id}", status_code=204, responses=error_responses(404))
def delete_route(route_id: uuid.UUID, session: DbSession, _: Admin) -> Response:
    row = session.get(Route, route_id)
    if row is None:
        raise not_found("route")
    session.delete(row)
    session.commit()
    return Response(status_code=204)


def _sample_event(body: ExplainIn) -> EventFacts:
    """The sample, validated exactly as the ingest route would (same schema, severity and lifecycle key)."""
    schema: type[ReleaseEventIn] | type[PipelineEventIn] = (
        ReleaseEventIn if body.kind == "release" else PipelineEventIn
    )
    try:
        parsed = schema.model_validate(body.event)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "event"
        raise ApiError(422, "invalid_event", f"event.{field}: {first['msg']}") from None
    payload = parsed.model_dump(mode="json", exclude={"op_id"}, exclude_none=True)
    event_type: str
    if isinstance(parsed, ReleaseEventIn):
        event_type = parsed.type
        severity, lifecycle = release_severity(parsed.type, payload), release_lifecycle_key(payload)
    else:
        event_type = f"pipeline.{parsed.stage}"
        severity, lifecycle = pipeline_severity(parsed.stage), pipeline_lifecycle_key(payload)
    return EventFacts(
        id=uuid.uuid4(),
        kind=body.kind,
        type=event_type,
        project=payload["project"],
        environment=payload.get("environment"),
        severity=severity,
        payload=payload,
        created_at=datetime.now(UTC),
        lifecycle_key=lifecycle,
    )


class _NoSending:
    """Stands in for the HTTP client while previewing: `preview` must not send, and if one tried, this
    refuses loudly instead of reaching a vendor from the API."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError("a preview tried to use the HTTP client")


def _redact(value: Any, secrets: list[str]) -> Any:
    """Belt and braces over `Provider.preview`'s promise: blank any secret that slipped into a preview."""
    if isinstance(value, dict):
        return {k: _redact(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, secrets) for v in value]
    if isinstance(value, str):
        for secret in secrets:
            if secret and secret in value:
                value = value.replace(secret, "[redacted]")
    return value


def _preview(
    request: Request, integration: Integration, facts: EventFacts
) -> tuple[dict[str, Any] | None, str | None]:
    try:
        config: BaseModel = stored_config(request.app.state.keyring, integration)
        provider = registry.provider_class(integration.provider)(cast("HttpClient", _NoSending()))
        body = provider.preview(render(facts), config)
    except ApiError as exc:
        return None, exc.message
    except Exception as exc:
        return None, f"preview failed: {type(exc).__name__}"
    return _redact(body, sorted(secret_values(config), key=len, reverse=True)), None


@router.post("/explain", response_model=Envelope[ExplainOut])
def explain(body: ExplainIn, request: Request, session: DbSession, _: Reader) -> dict[str, Any]:
    """Dry run: which routes a sample event would match (or why not), and for matched ones the body each
    provider would receive. Nothing is stored or sent.

    A plain (not `async`) route on purpose: FastAPI runs it on its thread pool, so rendering user payload
    templates (bounded, but up to a fraction of a second each) never stalls the API's event loop."""
    facts = _sample_event(body)
    routes, integrations = load_routes(session)
    out: list[ExplainRoute] = []
    verdicts = route_verdicts(facts, routes, integrations)
    for v in verdicts:
        preview = preview_error = None
        if v.reason is None:
            preview, preview_error = _preview(request, v.integration, facts)
        out.append(
            ExplainRoute(
                route_id=v.route.id,
                integration_id=v.integration.id,
                integration_name=v.integration.name,
                provider=v.integration.provider,
                matched=v.reason is None,
                reason=v.reason,
                would_deliver=v.would_deliver,
                preview=preview,
                preview_error=preview_error,
            )
        )
    planned = [v.integration.id for v in verdicts if v.would_deliver]
    result = ExplainOut(
        event_type=facts.type,
        severity=facts.severity,
        project=facts.project,
        routes=out,
        integrations=planned,
    )
    return envelope(result.model_dump(mode="json"))
