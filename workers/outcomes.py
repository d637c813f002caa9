"""Turning send results into decided transitions, applying them, and reporting them (metrics, logs).

`decide` is pure: classification comes from the provider's error, timing from workers/retry.py. `record` hands
the decided outcomes of a batch to shared/deliveries.py in one transaction (with the integration flags and the
targets a vendor reported gone, and what the outcomes say about each integration's circuit: workers/circuits.py)
and, only after the commit, counts metrics and logs every outcome that is not a
success (INFO retrying, WARNING dead) with ids, provider, error class, detail and next attempt time.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from providers import registry
from providers.base import plain_config
from shared import deliveries, delivery_lifecycles, metrics
from shared.db.models import Integration
from shared.deliveries import DeliveryState, Outcome
from shared.errors import INTERNAL_ERROR, DeliveryError
from shared.secrets_at_rest import encrypt_config
from workers import circuits, retry
from workers.configs import load_config
from workers.publish import publish_deliver_batches
from workers.runtime import ProcessRuntime
from workers.sending import SendResult

log = logging.getLogger(__name__)

CONFIG_ERROR = "config_error"


def decide(result: SendResult) -> Outcome:
    """The delivery's next state and the attempt row for one send result."""
    job = result.job
    c = job.claimed
    # What every outcome keeps unless it says otherwise; `dead` is only the starting point.
    base = Outcome(
        claimed=c,
        state=DeliveryState.DEAD,
        started_at=result.started_at,
        duration_ms=result.duration_ms,
        provider_ref=c.provider_ref,
        progress=c.progress,
    )
    err = result.error
    if job.setup_error is not None:
        return replace(base, error_class=CONFIG_ERROR, error_detail=job.setup_error, dead_reason=CONFIG_ERROR)
    if result.receipt is not None:
        receipt = result.receipt
        return replace(
            base,
            state=DeliveryState.DELIVERED,
            status_code=receipt.status_code,
            response_excerpt=receipt.response_excerpt,
            provider_ref=receipt.provider_ref or c.provider_ref,
            progress=_merged(c.progress, receipt.target_progress),
        )
    if isinstance(err, DeliveryError):
        failed = replace(
            base,
            error_class=err.code,
            error_detail=err.detail,
            status_code=err.status_code,
            response_excerpt=err.response_excerpt,
            progress=_merged(c.progress, err.target_progress),
        )
        if not err.retryable:
            return replace(failed, dead_reason=err.code)
        elapsed_s = c.budget_elapsed_s + result.duration_ms / 1000
        decision = retry.after_error(job.policy, c, err, elapsed_s=elapsed_s)
        if decision.delay_s is None:
            return replace(
                failed,
                dead_reason=decision.dead_reason,
                error_detail=decision.detail or err.detail,
                paced=decision.paced,
            )
        return replace(failed, state=DeliveryState.RETRYING, delay_s=decision.delay_s, paced=decision.paced)
    # Not a DeliveryError: our bug. Dead-letter it, never retry it, and keep the traceback in the log.
    log.error(
        "delivery %s (integration %s): provider %s raised unexpectedly",
        c.id,
        c.integration_id,
        job.provider,
        exc_info=err,
    )
    return replace(
        base, error_class=INTERNAL_ERROR, error_detail=type(err).__name__, dead_reason=INTERNAL_ERROR
    )


def _merged(progress: dict[str, str] | None, update: Mapping[str, str] | None) -> dict[str, str] | None:
    """Multi-target progress after an attempt: earlier targets' outcomes, overwritten by this attempt's."""
    return {**(progress or {}), **update} if update else progress


def record(runtime: ProcessRuntime, results: list[SendResult]) -> set[uuid.UUID]:
    """Decide and apply a batch of results in one transaction; return the ids whose transition applied."""
    if not results:
        return set()
    outcomes = [decide(r) for r in results]
    failing: dict[uuid.UUID, str] = {}
    healthy: set[uuid.UUID] = set()
    removed: dict[uuid.UUID, set[str]] = {}
    for r in results:
        integration_id = r.job.claimed.integration_id
        if r.receipt is not None:
            if r.job.integration_failing:
                healthy.add(integration_id)
            gone: tuple[str, ...] = r.receipt.removed_targets
        elif isinstance(r.error, DeliveryError):
            gone = r.error.removed_targets
            if r.error.marks_failing and not gone:
                # A target-level failure (one stale device token) is not the integration failing.
                failing[integration_id] = f"{r.error.code}: {r.error.detail}"
        else:
            gone = ()
        if gone:
            removed.setdefault(integration_id, set()).update(gone)
    groups = {
        (o.claimed.lifecycle_key, o.claimed.integration_id) for o in outcomes if o.claimed.lifecycle_key
    }
    with runtime.sessions() as session:
        # Lifecycle groups first (the gate's order): an update that waited on this send is woken below.
        delivery_lifecycles.lock_groups(session, groups)
        applied = deliveries.apply_outcomes(session, outcomes)
        woken = delivery_lifecycles.wake(session, groups, [o.claimed.id for o in outcomes])
        _set_integration_flags(session, failing, healthy)
        circuit_changes = circuits.apply_results(runtime, session, results)
        for integration_id in sorted(removed):
            _remove_targets(runtime, session, integration_id, sorted(removed[integration_id]))
        session.commit()
    circuit_changes.report()
    if woken:
        try:
            publish_deliver_batches(woken)
        except Exception:
            # Marked as published: the sweeper republishes them after requeue_after_s.
            log.exception("could not publish %d woken lifecycle update(s)", len(woken))
    _report(results, outcomes, applied)
    return set(applied)


def _set_integration_flags(
    session: Session, failing: Mapping[uuid.UUID, str], healthy: Iterable[uuid.UUID]
) -> None:
    """Mark integrations failing (with a reason) or healthy again; rows are locked in id order."""
    healthy_ids = sorted(set(healthy) - failing.keys())
    for integration_id in sorted(failing):
        session.execute(
            update(Integration)
            .where(Integration.id == integration_id)
            .values(failing=True, failing_reason=failing[integration_id][:200])
            .execution_options(synchronize_session=False)
        )
    if healthy_ids:
        locked = (
            select(Integration.id)
            .where(Integration.id.in_(healthy_ids), Integration.failing.is_(True))
            .order_by(Integration.id)
            .with_for_update()
            .scalar_subquery()
        )
        session.execute(
            update(Integration)
            .where(Integration.id.in_(locked))
            .values(failing=False, failing_reason=None)
            .execution_options(synchronize_session=False)
        )


def _remove_targets(
    runtime: ProcessRuntime, session: Session, integration_id: uuid.UUID, targets: list[str]
) -> None:
    """Drop targets the vendor says are gone (unregistered device tokens) from the integration's config.

    The row is locked and re-read so a concurrent removal or an admin's edit is not overwritten."""
    row = session.scalar(select(Integration).where(Integration.id == integration_id).with_for_update())
    if row is None:
        return
    config = load_config(runtime.keyring, row)
    if isinstance(config, str):
        return
    reduced = registry.provider_class(row.provider).without_targets(config, targets)
    if reduced is None:
        return
    row.config_ciphertext = encrypt_config(runtime.keyring, row.id, plain_config(reduced))
    row.config_key_id = runtime.keyring.primary_kid
    row.updated_at = datetime.now(UTC)
    log.info("integration %s: removed %d target(s) the provider reported gone", integration_id, len(targets))


_OUTCOME_LABEL = {
    DeliveryState.DELIVERED: "delivered",
    DeliveryState.RETRYING: "retried",
    DeliveryState.DEAD: "dead",
}


def _report(results: list[SendResult], outcomes: list[Outcome], applied: dict[uuid.UUID, datetime]) -> None:
    """Metrics and logs, after the commit: what was counted is what was stored."""
    now = datetime.now(UTC)
    for result, o in zip(results, outcomes, strict=True):
        job = result.job
        provider = job.provider
        c = o.claimed
        if job.setup_error is None:
            metrics.ATTEMPT_DURATION.labels(provider).observe(result.duration_ms / 1000)
        if c.id not in applied:
            log.info(
                "delivery %s (integration %s, %s): late outcome %s of attempt %d kept as history; the delivery "
                "had moved on",
                c.id,
                c.integration_id,
                provider,
                o.state,
                c.attempt_no,
            )
            continue
        metrics.DELIVERIES.labels(provider, _OUTCOME_LABEL[o.state], o.error_class or "").inc()
        if o.state == DeliveryState.DELIVERED:
            if job.accepted_at is not None:
                metrics.DELIVERY_LATENCY.labels(provider).observe((now - job.accepted_at).total_seconds())
            continue
        if o.state == DeliveryState.RETRYING:
            metrics.RETRIES.labels(provider, str(min(c.attempt_no, 20))).inc()
        log.log(
            logging.INFO if o.state == DeliveryState.RETRYING else logging.WARNING,
            "delivery %s (integration %s, %s) attempt %d: %s %s: %s; next attempt %s",
            c.id,
            c.integration_id,
            provider,
            c.attempt_no,
            o.state,
            o.error_class,
            o.error_detail,
            applied[c.id].isoformat() if o.state == DeliveryState.RETRYING else "none",
        )
