"""Integrations: create, list, get, update (PATCH/PUT), delete, the Test button and Recent deliveries.

Configs are validated by the provider's schema, encrypted at rest, masked on every read. Any save of an
integration's config redrives its dead letters (seed 001: re-saving drains them) and says how many. Moving a
destination (URL, host, API base) while keeping stored secrets is refused (api/secret_destinations.py).
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy import func, select

from api.deps import Admin, DbSession, Reader
from api.errors import ApiError, envelope, not_found
from api.queries.deliveries import DeliveryQuery, delivery_page
from api.routes._common import (
    MAX_PAGE,
    integration_outs,
    merge_config,
    publish_deliveries,
    run_bulk,
    stored_config,
    validated_config,
)
from api.schemas import (
    DeliveryPage,
    Envelope,
    IntegrationIn,
    IntegrationOut,
    IntegrationPatch,
    IntegrationSaved,
    TestSent,
    error_responses,
)
from api.secret_destinations import check_secret_destinations
from providers import registry
from providers.base import plain_config
from shared import deliveries as deadletters
from shared.circuits import (
    CircuitPolicy,
    CircuitState,
    circuit_of,
    circuit_values,
    closed,
    probe_now,
    probing,
)
from shared.crypto import KeyRing
from shared.db.models import Delivery, Event, Integration, Route
from shared.secrets_at_rest import encrypt_config

router = APIRouter(
    prefix="/v1/integrations",
    tags=["integrations"],
    responses=error_responses(400, 401, 403, 413, 415, 422, 503),
)

DeliveryState = Annotated[
    str | None,
    Query(pattern="^(pending|sending|retrying|delivered|dead|skipped)$", description="only this state"),
]


def _get(session: DbSession, integration_id: uuid.UUID, *, lock: bool = False) -> Integration:
    stmt = select(Integration).where(Integration.id == integration_id)
    row = session.scalar(stmt.with_for_update() if lock else stmt)
    if row is None:
        raise not_found("integration")
    return row


@router.post("", status_code=201, response_model=Envelope[IntegrationOut])
def create_integration(body: IntegrationIn, request: Request, session: DbSession, _: Admin) -> dict[str, Any]:
    config = validated_config(
        body.provider, body.config, egress_allow_cidrs=request.app.state.settings.egress_allow_cidrs
    )
    keyring: KeyRing = request.app.state.keyring
    integration_id = uuid.uuid4()
    row = Integration(
        id=integration_id,
        name=body.name,
        provider=body.provider,
        project=body.project,
        enabled=body.enabled,
        config_ciphertext=encrypt_config(keyring, integration_id, plain_config(config)),
        config_key_id=keyring.primary_kid,
        retry_max_retries=body.retry_max_retries,
        retry_base_delay_s=body.retry_base_delay_s,
        pace_per_s=body.pace_per_s,
        pace_burst=body.pace_burst,
    )
    session.add(row)
    session.commit()
    session.refresh(row)
    [out] = integration_outs(session, keyring, [row])
    return envelope(out)


@router.get("", response_model=Envelope[list[IntegrationOut]])
def list_integrations(
    request: Request,
    session: DbSession,
    _: Reader,
    provider: Annotated[str | None, Query(max_length=32)] = None,
    project: Annotated[str | None, Query(max_length=100)] = None,
    enabled: bool | None = None,
) -> dict[str, Any]:
    stmt = select(Integration).order_by(Integration.created_at, Integration.id)
    if provider is not None:
        stmt = stmt.where(Integration.provider == provider)
    if project is not None:
        stmt = stmt.where(Integration.project == project)
    if enabled is not None:
        stmt = stmt.where(Integration.enabled.is_(enabled))
    return envelope(integration_outs(session, request.app.state.keyring, list(session.scalars(stmt))))


@router.get("/{integration_id}", response_model=Envelope[IntegrationOut], responses=error_responses(404))
def get_integration(
    integration_id: uuid.UUID, request: Request, session: DbSession, _: Reader
) -> dict[str, Any]:
    [out] = integration_outs(session, request.app.state.keyring, [_get(session, integration_id)])
    return envelope(out)


def _save(
    request: Request,
    session: DbSession,
    row: Integration,
    fields: dict[str, Any],
    new_config: dict[str, Any] | None,
    *,
    partial: bool,
) -> dict[str, Any]:
    keyring: KeyRing = request.app.state.keyring
    if new_config is not None:
        old = stored_config(keyring, row)
        config = validated_config(
            row.provider,
            merge_config(old, new_config, partial=partial),
            egress_allow_cidrs=request.app.state.settings.egress_allow_cidrs,
        )
        check_secret_destinations(old, config, new_config)
        # The provider may carry state over (the webhook keeps a rotated signing secret for an overlap).
        config = registry.provider_class(row.provider).on_config_update(old, config)
        row.config_ciphertext = encrypt_config(keyring, row.id, plain_config(config))
        row.config_key_id = keyring.primary_kid
    if "project" in fields and fields["project"] is not None:
        conflicting = session.scalar(
            select(func.count())
            .select_from(Route)
            .where(Route.integration_id == row.id, Route.project.is_distinct_from(fields["project"]))
        )
        if conflicting:
            raise ApiError(
                422,
                "project_mismatch",
                f"project: {conflicting} route(s) of this integration are for other projects; change them first",
            )
    if fields.get("enabled") is False and row.enabled:
        # Its queued work is skipped now (replayable), not left for a claim to find; in the same transaction.
        deadletters.skip_integration(session, row.id)
    now = datetime.now(UTC)
    if fields.get("enabled") is True and not row.enabled:
        # Enabled again (after an automatic disable, say): a fresh start, its circuit closed (a failure opens it
        # again soon enough), the disable's reason gone.
        for name, value in circuit_values(closed(now)).items():
            setattr(row, name, value)
        row.disabled_reason = None
    elif new_config is not None:
        # A saved config is a "try again": an open circuit probes at once (its success closes it and says so).
        for name, value in circuit_values(probe_now(circuit_of(row), now)).items():
            setattr(row, name, value)
    for name, value in fields.items():
        setattr(row, name, value)
    row.updated_at = datetime.now(UTC)
    session.commit()
    session.refresh(row)
    out = IntegrationSaved(**integration_outs(session, keyring, [row])[0])
    if new_config is not None:
        # Any save of the config drains its dead letters, fresh credentials or not (seed 001: re-saving the
        # integration is how a user says "try again"); the answer says how many.
        result = run_bulk(request, session, "redrive", deadletters.DeadLetterFilter(integration_id=row.id))
        out.redriven = result.processed
        out.redrive_job_id = result.job_id
    return envelope(out.model_dump(mode="json"))


@router.patch(
    "/{integration_id}", response_model=Envelope[IntegrationSaved], responses=error_responses(404, 409)
)
def update_integration(
    integration_id: uuid.UUID, body: IntegrationPatch, request: Request, session: DbSession, _: Admin
) -> dict[str, Any]:
    """Change some fields: enable/disable, rename, re-scope, retry overrides, or (part of) the config."""
    row = _get(session, integration_id, lock=True)
    given = body.model_fields_set
    for required in ("name", "enabled"):
        if required in given and getattr(body, required) is None:
            raise ApiError(422, "invalid_field", f"{required}: may not be null")
    fields = {k: getattr(body, k) for k in given if k != "config"}
    return _save(request, session, row, fields, body.config if "config" in given else None, partial=True)


@router.put(
    "/{integration_id}", response_model=Envelope[IntegrationSaved], responses=error_responses(404, 409)
)
def replace_integration(
    integration_id: uuid.UUID, body: IntegrationIn, request: Request, session: DbSession, _: Admin
) -> dict[str, Any]:
    """Replace the integration. Secret config fields omitted or sent back masked keep their stored value."""
    row = _get(session, integration_id, lock=True)
    if body.provider != row.provider:
        raise ApiError(422, "provider_immutable", "provider: cannot change; create a new integration instead")
    fields = body.model_dump(exclude={"config", "provider"})
    return _save(request, session, row, fields, body.config, partial=False)


@router.delete("/{integration_id}", status_code=204, responses=error_responses(404))
def delete_integration(integration_id: uuid.UUID, session: DbSession, _: Admin) -> Response:
    session.delete(_get(session, integration_id))
    session.commit()
    return Response(status_code=204)


def _test_payload(request: Request, row: Integration) -> dict[str, Any]:
    base = request.app.state.settings.public_base_url.rstrip("/")
    return {
        "type": "release.created",
        "project": row.project or "herald-test",
        "environment": "production",
        "version": "1.0.0-test",
        "mandatory": False,
        "description": (
            f"[TEST] A test notification from Herald for the integration {row.name!r}. "
            "If you can read this, it works; no release happened."
        ),
        "url": f"{base}/v1/integrations/{row.id}",
        # shared/rendering.py prefixes the title with [TEST] for these
        "test": True,
    }


@router.post(
    "/{integration_id}/test",
    status_code=202,
    response_model=Envelope[TestSent],
    responses=error_responses(404),
)
def test_integration(
    integration_id: uuid.UUID, request: Request, session: DbSession, _: Admin
) -> dict[str, Any]:
    """Send a `[TEST]` release event to this integration only, through the real pipeline: the workers render,
    send and retry it like any delivery. Answers at once with the delivery id; watch it with
    GET /v1/deliveries/{delivery_id}. Works on a disabled integration too (test before enabling).
    While the integration's circuit is open, the test is its probe: sent now, and its success closes the
    circuit (and releases the held deliveries)."""
    row = _get(session, integration_id, lock=True)
    payload = _test_payload(request, row)
    event_id, delivery_id = uuid.uuid4(), uuid.uuid4()
    now = datetime.now(UTC)
    session.add(
        Event(
            id=event_id,
            kind="release",
            type="release.created",
            project=payload["project"],
            environment=payload["environment"],
            severity="info",
            payload=payload,
            idempotency_key=f"herald-test/{event_id}",
            request_hash=hashlib.sha256(str(event_id).encode()).hexdigest(),
            # Targeted at this integration only: marked fanned out, so no route sends it anywhere else.
            fanned_out_at=now,
            next_fanout_at=now,
        )
    )
    session.flush()
    session.add(
        Delivery(id=delivery_id, event_id=event_id, integration_id=row.id, state="pending", queued_at=now)
    )
    circuit = circuit_of(row)
    if circuit.state != CircuitState.CLOSED:
        policy = CircuitPolicy.from_settings(request.app.state.settings)
        for name, value in circuit_values(probing(circuit, delivery_id, policy, now)).items():
            setattr(row, name, value)
    session.commit()
    published = publish_deliveries(request, [delivery_id])
    return envelope(
        TestSent(delivery_id=delivery_id, event_id=event_id, published=published).model_dump(mode="json")
    )


@router.get(
    "/{integration_id}/deliveries", response_model=Envelope[DeliveryPage], responses=error_responses(404)
)
def recent_deliveries(
    integration_id: uuid.UUID,
    session: DbSession,
    _: Reader,
    state: DeliveryState = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    """This integration's deliveries, newest first, each with its attempts. Page with `next_cursor`."""
    _get(session, integration_id)
    q = DeliveryQuery(integration_id=integration_id, state=state)
    return envelope(delivery_page(session, q, limit=limit, cursor=cursor).model_dump(mode="json"))
