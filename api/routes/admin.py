"""Minimal integration and route management, admin key required. Configs are encrypted, masked on read."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ValidationError
from sqlalchemy import select

from api.deps import Admin, DbSession
from api.errors import ApiError, envelope, not_found
from api.schemas import IntegrationIn, IntegrationOut, RouteIn, RouteOut
from providers import registry
from providers.base import mask_config, plain_config
from shared.crypto import DecryptError, KeyRing
from shared.db.models import Integration, Route
from shared.secrets_at_rest import decrypt_config, encrypt_config

router = APIRouter(prefix="/v1", tags=["admin"])


def _validated_config(provider: str, config: dict[str, Any]) -> BaseModel:
    try:
        model = registry.config_model(provider)
    except registry.UnknownProvider:
        raise ApiError(
            422,
            "unknown_provider",
            f"unknown provider {provider[:32]!r}; known: {', '.join(registry.names())}",
        ) from None
    try:
        return model.model_validate(config)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "config"
        # Only the field name and pydantic's message: never the input, which may be a secret.
        raise ApiError(422, "invalid_config", f"config.{field}: {first['msg']}") from None


def integration_out(keyring: KeyRing, row: Integration) -> dict[str, Any]:
    try:
        config = registry.config_model(row.provider).model_validate(
            decrypt_config(keyring, row.id, row.config_ciphertext)
        )
        masked = mask_config(config)
    except (DecryptError, registry.UnknownProvider, ValidationError):
        masked = {"error": "config cannot be read with the configured keys"}
    return IntegrationOut(
        id=row.id,
        name=row.name,
        provider=row.provider,
        project=row.project,
        enabled=row.enabled,
        failing=row.failing,
        failing_reason=row.failing_reason,
        config=masked,
        retry_max_retries=row.retry_max_retries,
        retry_base_delay_s=row.retry_base_delay_s,
        created_at=row.created_at,
        updated_at=row.updated_at,
    ).model_dump(mode="json")


@router.post("/integrations", status_code=201)
def create_integration(body: IntegrationIn, request: Request, session: DbSession, _: Admin) -> dict[str, Any]:
    config = _validated_config(body.provider, body.config)
    keyring: KeyRing = request.app.state.keyring
    integration_id = uuid.uuid4()
    blob = encrypt_config(keyring, integration_id, plain_config(config))
    row = Integration(
        id=integration_id,
        name=body.name,
        provider=body.provider,
        project=body.project,
        enabled=body.enabled,
        config_ciphertext=blob,
        config_key_id=keyring.primary_kid,
        retry_max_retries=body.retry_max_retries,
        retry_base_delay_s=body.retry_base_delay_s,
    )
    session.add(row)
    session.commit()
    session.refresh(row)
    return envelope(integration_out(keyring, row))


@router.get("/integrations")
def list_integrations(request: Request, session: DbSession, _: Admin) -> dict[str, Any]:
    rows = session.scalars(select(Integration).order_by(Integration.created_at))
    return envelope([integration_out(request.app.state.keyring, r) for r in rows])


@router.get("/integrations/{integration_id}")
def get_integration(
    integration_id: uuid.UUID, request: Request, session: DbSession, _: Admin
) -> dict[str, Any]:
    row = session.get(Integration, integration_id)
    if row is None:
        raise not_found("integration")
    return envelope(integration_out(request.app.state.keyring, row))


@router.delete("/integrations/{integration_id}", status_code=204)
def delete_integration(integration_id: uuid.UUID, session: DbSession, _: Admin) -> Response:
    row = session.get(Integration, integration_id)
    if row is None:
        raise not_found("integration")
    session.delete(row)
    session.commit()
    return Response(status_code=204)


@router.post("/routes", status_code=201)
def create_route(body: RouteIn, session: DbSession, _: Admin) -> dict[str, Any]:
    integration = session.get(Integration, body.integration_id)
    if integration is None:
        raise ApiError(422, "unknown_integration", "integration_id does not name an integration")
    if integration.project is not None and body.project != integration.project:
        raise ApiError(
            422,
            "project_mismatch",
            f"integration is bound to project {integration.project!r}; route must be too",
        )
    row = Route(
        integration_id=body.integration_id,
        project=body.project,
        environments=body.environments,
        event_types=body.event_types,
        min_severity=body.min_severity,
    )
    session.add(row)
    session.commit()
    session.refresh(row)
    return envelope(RouteOut.model_validate(row, from_attributes=True).model_dump(mode="json"))


@router.get("/routes")
def list_routes(session: DbSession, _: Admin) -> dict[str, Any]:
    rows = session.scalars(select(Route).order_by(Route.created_at))
    return envelope([RouteOut.model_validate(r, from_attributes=True).model_dump(mode="json") for r in rows])


@router.delete("/routes/{route_id}", status_code=204)
def delete_route(route_id: uuid.UUID, session: DbSession, _: Admin) -> Response:
    row = session.get(Route, route_id)
    if row is None:
        raise not_found("route")
    session.delete(row)
    session.commit()
    return Response(status_code=204)
