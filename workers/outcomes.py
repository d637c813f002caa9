"""Turning send outcomes into state: the retry decision, attempt rows, delivery updates, integration flags.

Everything is written in batched statements: one executemany UPDATE of the deliveries, one INSERT of the
attempts. Each delivery update is guarded by (state = 'sending', attempt_count = the claimed attempt): if our
lease ran out and the sweeper handed the row to another worker, our late result does not overwrite theirs.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, select, update
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.orm import Session

from providers import registry
from providers.base import plain_config
from shared import metrics
from shared.db.models import Attempt, Delivery, Integration
from shared.errors import ATTEMPTS_EXHAUSTED, INTERNAL_ERROR, DeliveryError
from shared.secrets_at_rest import encrypt_config
from workers.runtime import ProcessRuntime
from workers.sending import CONFIG_ERROR, Outcome, load_config

log = logging.getLogger(__name__)


def _decide(outcome: Outcome, now: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
    """(delivery update params, attempt row) for one outcome."""
    job = outcome.job
    c = job.claimed
    update_row: dict[str, Any] = {
        "b_id": c.id,
        "b_attempt": c.attempt_no,
        "state": "dead",
        "next_attempt_at": now,
        "last_error_class": None,
        "last_error_detail": None,
        "dead_reason": None,
        "provider_ref": c.provider_ref,
        "progress": c.progress,
        "delivered_at": None,
    }
    attempt = {
        "delivery_id": c.id,
        "attempt_no": c.attempt_no,
        "started_at": outcome.started_at,
        "duration_ms": outcome.duration_ms,
        "status_code": None,
        "error_class": None,
        "response_excerpt": None,
    }
    err = outcome.error
    if job.setup_error is not None:
        update_row |= {
            "dead_reason": CONFIG_ERROR,
            "last_error_class": CONFIG_ERROR,
            "last_error_detail": job.setup_error[:500],
        }
        attempt["error_class"] = CONFIG_ERROR
    elif outcome.receipt is not None:
        update_row |= {
            "state": "delivered",
            "delivered_at": now,
            "provider_ref": outcome.receipt.provider_ref or c.provider_ref,
        }
        if outcome.receipt.target_progress is not None:
            update_row["progress"] = {**(c.progress or {}), **outcome.receipt.target_progress}
        attempt |= {
            "status_code": outcome.receipt.status_code,
            "response_excerpt": outcome.receipt.response_excerpt,
        }
    elif isinstance(err, DeliveryError):
        attempt |= {
            "status_code": err.status_code,
            "error_class": err.code,
            "response_excerpt": err.response_excerpt,
        }
        update_row |= {"last_error_class": err.code, "last_error_detail": err.detail[:500]}
        if err.target_progress:
            update_row["progress"] = {**(c.progress or {}), **err.target_progress}
        if err.retryable:
            delay_s = job.policy.next_delay_s(c.attempt_no, retry_after_s=getattr(err, "retry_after_s", None))
            if delay_s is None:
                update_row["dead_reason"] = ATTEMPTS_EXHAUSTED
            else:
                update_row |= {"state": "retrying", "next_attempt_at": now + timedelta(seconds=delay_s)}
        else:
            update_row["dead_reason"] = err.code
    else:
        # Not a DeliveryError: our bug. Dead-letter it, never retry it, and keep the traceback in the log.
        log.error("delivery %s: provider %s raised unexpectedly", c.id, job.provider, exc_info=err)
        update_row |= {
            "dead_reason": INTERNAL_ERROR,
            "last_error_class": INTERNAL_ERROR,
            "last_error_detail": type(err).__name__,
        }
        attempt["error_class"] = INTERNAL_ERROR
    attempt["outcome"] = update_row["state"]
    return update_row, attempt


# Core tables, not ORM entities: these run as executemany (psycopg pipelines them), and the ORM's bulk
# UPDATE-by-primary-key mode would not keep our extra WHERE guard.
_delivery = cast(Table, Delivery.__table__)
_attempt = cast(Table, Attempt.__table__)
_integration = cast(Table, Integration.__table__)

OUTCOME_UPDATE = (
    update(_delivery)
    .where(
        _delivery.c.id == bindparam("b_id"),
        _delivery.c.state == "sending",
        _delivery.c.attempt_count == bindparam("b_attempt"),
    )
    .values(
        state=bindparam("state"),
        next_attempt_at=bindparam("next_attempt_at"),
        last_error_class=bindparam("last_error_class"),
        last_error_detail=bindparam("last_error_detail"),
        dead_reason=bindparam("dead_reason"),
        provider_ref=bindparam("provider_ref"),
        progress=bindparam("progress", type_=JSONB),
        delivered_at=bindparam("delivered_at"),
        lease_expires_at=None,
        updated_at=func.now(),
    )
)


def record(runtime: ProcessRuntime, outcomes: list[Outcome]) -> None:
    now = datetime.now(UTC)
    decided = [_decide(o, now) for o in outcomes]
    _observe(outcomes, decided, now)
    failing: dict[uuid.UUID, str] = {}
    healthy: set[uuid.UUID] = set()
    removed: dict[uuid.UUID, set[str]] = {}
    for o in outcomes:
        integration_id = o.job.claimed.integration_id
        if o.receipt is not None:
            healthy.add(integration_id)
            gone: tuple[str, ...] = o.receipt.removed_targets
        elif isinstance(o.error, DeliveryError):
            gone = o.error.removed_targets
            if o.error.marks_failing and not gone:
                # A target-level failure (one stale device token) is not the integration failing.
                failing[integration_id] = f"{o.error.code}: {o.error.detail}"[:200]
        else:
            gone = ()
        if gone:
            removed.setdefault(integration_id, set()).update(gone)
    with runtime.sessions() as session:
        session.execute(OUTCOME_UPDATE, [u for u, _ in decided])
        session.execute(
            insert(_attempt).on_conflict_do_nothing(constraint="attempt_delivery_no_key"),
            [a for _, a in decided],
        )
        if failing:
            session.execute(
                update(_integration)
                .where(_integration.c.id == bindparam("b_id"))
                .values(failing=True, failing_reason=bindparam("reason")),
                [{"b_id": k, "reason": v} for k, v in failing.items()],
            )
        if healthy - failing.keys():
            session.execute(
                update(_integration)
                .where(_integration.c.id.in_(healthy - failing.keys()), _integration.c.failing.is_(True))
                .values(failing=False, failing_reason=None)
            )
        for integration_id, targets in removed.items():
            _remove_targets(runtime, session, integration_id, sorted(targets))
        session.commit()


def _remove_targets(
    runtime: ProcessRuntime, session: Session, integration_id: uuid.UUID, targets: list[str]
) -> None:
    """Drop targets the vendor says are gone (unregistered device tokens) from the integration's config.

    The row is locked and re-read so a concurrent removal or an admin's edit is not overwritten."""
    row = session.scalar(select(Integration).where(Integration.id == integration_id).with_for_update())
    if row is None:
        return
    config = load_config(runtime, row)
    if isinstance(config, str):
        return
    reduced = registry.provider_class(row.provider).without_targets(config, targets)
    if reduced is None:
        return
    row.config_ciphertext = encrypt_config(runtime.keyring, row.id, plain_config(reduced))
    row.config_key_id = runtime.keyring.primary_kid
    row.updated_at = now_utc()
    log.info("integration %s: removed %d target(s) the provider reported gone", integration_id, len(targets))


_OUTCOME_LABEL = {"delivered": "delivered", "retrying": "retried", "dead": "dead"}


def _observe(
    outcomes: list[Outcome], decided: list[tuple[dict[str, Any], dict[str, Any]]], now: datetime
) -> None:
    for outcome, (update_row, attempt) in zip(outcomes, decided, strict=True):
        provider = outcome.job.provider
        state = update_row["state"]
        metrics.DELIVERIES.labels(provider, _OUTCOME_LABEL[state], attempt["error_class"] or "").inc()
        if outcome.job.setup_error is None:
            metrics.ATTEMPT_DURATION.labels(provider).observe(outcome.duration_ms / 1000)
        if state == "delivered" and outcome.job.accepted_at is not None:
            metrics.DELIVERY_LATENCY.labels(provider).observe((now - outcome.job.accepted_at).total_seconds())
        elif state == "retrying":
            metrics.RETRIES.labels(provider, str(min(outcome.job.claimed.attempt_no, 20))).inc()


def now_utc() -> datetime:
    return datetime.now(UTC)
