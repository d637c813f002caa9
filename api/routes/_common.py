"""Helpers shared by the management routes: integration configs (validate, mask, merge), cursors, redrive."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from fastapi import Request
from pydantic import BaseModel, ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.errors import ApiError
from api.schemas import RECENT_OUTCOMES_WINDOW_S, BulkResult, CircuitOut, IntegrationOut, RecentOutcomes
from providers import registry
from providers.base import mask_config, plain_config
from shared import dead_letter_actions
from shared import deliveries as deadletters
from shared.circuits import circuit_of, next_probe_at
from shared.crypto import DecryptError, KeyRing
from shared.db.models import BulkJob, Delivery, Integration
from shared.db.sql import any_of
from shared.secrets_at_rest import decrypt_config
from shared.tasknames import TASK_DELIVER, TASK_REDRIVE

MAX_PAGE = 200


def validated_config(
    provider: str, config: dict[str, Any], *, egress_allow_cidrs: Sequence[str] = ()
) -> BaseModel:
    """A config as a user typed it: unknown keys refused, and destinations the egress policy (the process's
    allow-list) refuses are refused now rather than dead-lettered later."""
    try:
        registry.config_model(provider)
    except registry.UnknownProvider:
        raise ApiError(
            422,
            "unknown_provider",
            f"unknown provider {provider[:32]!r}; known: {', '.join(registry.names())}",
        ) from None
    try:
        return registry.validate_input_config(provider, config, egress_allow_cidrs=egress_allow_cidrs)
    except ValidationError as exc:
        errors = exc.errors()
        # A typo (`url` for `webhook_url`) shows first as the missing field; name the unknown key instead.
        first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        field = ".".join(str(p) for p in first["loc"]) or "config"
        # Only the field name and pydantic's message: never the input, which may be a secret.
        raise ApiError(422, "invalid_config", f"config.{field}: {first['msg']}") from None


def stored_config(keyring: KeyRing, row: Integration) -> BaseModel:
    """The integration's config, decrypted and validated; 409 if the configured keys cannot read it."""
    try:
        return registry.load_stored_config(
            row.provider, decrypt_config(keyring, row.id, row.config_ciphertext)
        )
    except (DecryptError, registry.UnknownProvider, ValidationError, ValueError):
        raise ApiError(
            409, "config_unreadable", "the stored config cannot be read with the configured keys"
        ) from None


def recent_outcomes(session: Session, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, RecentOutcomes]:
    """Per integration, its deliveries of the last RECENT_OUTCOMES_WINDOW_S by state, in one statement
    served by `delivery_integration_created_idx` (integration_id, created_at)."""
    counts: dict[uuid.UUID, RecentOutcomes] = {i: RecentOutcomes() for i in ids}
    if not ids:
        return counts
    rows = session.execute(
        select(Delivery.integration_id, Delivery.state, func.count())
        .where(
            any_of(Delivery.integration_id, ids),
            Delivery.created_at >= func.now() - timedelta(seconds=RECENT_OUTCOMES_WINDOW_S),
            Delivery.state.in_(("delivered", "retrying", "dead")),
        )
        .group_by(Delivery.integration_id, Delivery.state)
    )
    for integration_id, state, n in rows:
        setattr(counts[integration_id], state, n)
    return counts


def integration_outs(session: Session, keyring: KeyRing, rows: Sequence[Integration]) -> list[dict[str, Any]]:
    outcomes = recent_outcomes(session, [r.id for r in rows])
    return [integration_out(keyring, r, outcomes[r.id]) for r in rows]


def integration_out(keyring: KeyRing, row: Integration, outcomes: RecentOutcomes) -> dict[str, Any]:
    """Use `integration_outs` (it counts the outcomes); this shapes one row whose outcomes are known."""
    try:
        masked = mask_config(stored_config(keyring, row))
    except ApiError:
        masked = {"error": "config cannot be read with the configured keys"}
    circuit = circuit_of(row)
    return IntegrationOut(
        id=row.id,
        name=row.name,
        provider=row.provider,
        project=row.project,
        enabled=row.enabled,
        disabled_reason=row.disabled_reason,
        failing=row.failing,
        failing_reason=row.failing_reason,
        circuit=CircuitOut(
            state=circuit.state,
            reason=circuit.reason,
            since=circuit.since,
            next_probe_at=next_probe_at(circuit),
        ),
        config=masked,
        retry_max_retries=row.retry_max_retries,
        retry_base_delay_s=row.retry_base_delay_s,
        pace_per_s=row.pace_per_s,
        pace_burst=row.pace_burst,
        created_at=row.created_at,
        updated_at=row.updated_at,
        recent_outcomes=outcomes,
    ).model_dump(mode="json")


def merge_config(stored: BaseModel, new: dict[str, Any], *, partial: bool) -> dict[str, Any]:
    """The config to validate for an update: `new`, where a value sent back exactly as the API masked it keeps
    the stored secret, and an omitted secret field keeps its stored value (`partial`: any omitted field does).
    This is what lets a UI round-trip the masked config it was shown without re-entering every secret."""
    plain = plain_config(stored)
    masked = mask_config(stored)
    merged = _merge(new, masked, plain)
    for key, plain_value in plain.items():
        if key not in new and (partial or masked.get(key) != plain_value):
            merged[key] = plain_value
    return merged  # type: ignore[no-any-return]


def _merge(new: Any, masked: Any, plain: Any) -> Any:
    if isinstance(new, dict) and isinstance(plain, dict):
        masked_dict = masked if isinstance(masked, dict) else {}
        return {k: _merge(v, masked_dict.get(k), plain[k]) if k in plain else v for k, v in new.items()}
    if masked != plain and new == masked:
        return plain
    return new


def encode_cursor(ts: datetime, row_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([ts.isoformat(), str(row_id)])).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        ts, row_id = orjson.loads(raw)
        parsed = datetime.fromisoformat(ts)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed, uuid.UUID(row_id)
    except (ValueError, TypeError, orjson.JSONDecodeError):
        raise ApiError(422, "invalid_cursor", "cursor: not a cursor this API returned") from None


def publish_deliveries(request: Request, ids: list[uuid.UUID]) -> bool:
    """Publish `deliver` batches now. If Redis refuses, the rows were marked queued, so the sweeper republishes
    them after `requeue_after_s`; nothing is lost, it is only later."""
    settings = request.app.state.settings
    size = settings.deliver_batch_size
    ok = True
    for start in range(0, len(ids), size):
        batch = [str(i) for i in ids[start : start + size]]
        ok = request.app.state.enqueuer.send(TASK_DELIVER, [batch]) and ok
    return ok


def run_bulk(
    request: Request, session: Session, action: str, flt: deadletters.DeadLetterFilter
) -> BulkResult:
    """Redrive or purge the selection: in this request when small, else as a background job (`bulk_job`)."""
    settings = request.app.state.settings
    matched = deadletters.count(session, flt)
    if matched <= settings.dlq_inline_limit:
        if action == "redrive":
            ids = dead_letter_actions.redrive_batch(session, flt, max(matched, 1), queued=True)
            session.commit()
            publish_deliveries(request, ids)
            processed = len(ids)
        else:
            processed = dead_letter_actions.purge_batch(session, flt, max(matched, 1))
            session.commit()
        return BulkResult(action=action, matched=matched, processed=processed, state="done")
    # A snapshot: rows that die after this request are not part of it.
    now = datetime.now(UTC)
    until = min(flt.until, now) if flt.until else now
    snapshot = deadletters.DeadLetterFilter(**{**flt.__dict__, "until": until})
    job = BulkJob(id=uuid.uuid4(), action=action, filters=snapshot.to_json(), matched=matched)
    session.add(job)
    session.commit()
    if not request.app.state.enqueuer.send(TASK_REDRIVE, [str(job.id)]):
        job.state = "failed"
        job.error = "the queue is unavailable"
        session.commit()
        raise ApiError(
            503, "queue_unavailable", "the task queue is unavailable; nothing was changed, retry later"
        )
    return BulkResult(action=action, matched=matched, processed=0, state="queued", job_id=job.id)
