"""Deliver: one task = one batch of delivery ids, sent concurrently on this process's event loop.

1. Claim the batch with one conditional UPDATE (`pending|retrying -> sending`, attempt_count + 1, a lease);
   ids not claimed belong to someone else (already sent, or claimed by another worker) and are ignored.
2. Load events and integrations for the claimed rows (two queries), decrypt each config once.
3. Send them all concurrently with the process's shared HTTP client; each provider makes one attempt.
4. Write the attempt rows and the outcomes in batched statements; the retry policy decides `next_attempt_at`.

Every outcome update is guarded by (state = 'sending', attempt_count = the claimed attempt): if our lease ran
out and the sweeper handed the row to another worker, our late result does not overwrite theirs.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from celery import shared_task
from pydantic import BaseModel, ValidationError
from sqlalchemy import Table, bindparam, func, select, text, update
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.orm import Session

from providers import registry
from providers.base import Receipt, plain_config
from shared import metrics
from shared.crypto import DecryptError
from shared.db.models import Attempt, Delivery, Event, Integration
from shared.errors import ATTEMPTS_EXHAUSTED, INTERNAL_ERROR, DeliveryError
from shared.rendering import RenderedMessage, render
from shared.secrets_at_rest import decrypt_config, encrypt_config
from shared.tasknames import TASK_DELIVER
from workers.retry import RetryPolicy
from workers.runtime import ProcessRuntime, get_runtime
from workers.tasks.fanout import event_facts

log = logging.getLogger(__name__)

CONFIG_ERROR = "config_error"
# Extra time past a provider's own timeout before we give up on a send that will not return.
SEND_GUARD_S = 5.0


@dataclass(frozen=True)
class Claimed:
    id: uuid.UUID
    event_id: uuid.UUID
    integration_id: uuid.UUID
    attempt_no: int
    provider_ref: str | None
    previous_ref: str | None
    progress: dict[str, str] | None


@dataclass
class Job:
    claimed: Claimed
    provider: str
    message: RenderedMessage | None
    config: BaseModel | None
    policy: RetryPolicy
    setup_error: str | None = None  # why the job could not even be attempted
    accepted_at: datetime | None = None  # when the API accepted the event (for accept->delivered latency)


@dataclass
class Outcome:
    job: Job
    started_at: datetime
    duration_ms: float
    receipt: Receipt | None = None
    error: BaseException | None = None


CLAIM_SQL = text(
    """
    UPDATE delivery
       SET state = 'sending',
           attempt_count = attempt_count + 1,
           lease_expires_at = now() + make_interval(secs => :lease_s),
           queued_at = NULL,
           updated_at = now()
     WHERE id = ANY(:ids)
       AND state IN ('pending', 'retrying')
       AND next_attempt_at <= now() + interval '50 milliseconds'
    RETURNING id, event_id, integration_id, attempt_count, provider_ref, previous_ref, progress
    """
)


def claim(runtime: ProcessRuntime, ids: list[uuid.UUID]) -> list[Claimed]:
    with runtime.sessions() as session:
        rows = session.execute(CLAIM_SQL, {"ids": ids, "lease_s": runtime.settings.sending_lease_s}).all()
        session.commit()
    return [
        Claimed(
            r.id, r.event_id, r.integration_id, r.attempt_count, r.provider_ref, r.previous_ref, r.progress
        )
        for r in rows
    ]


def prepare(runtime: ProcessRuntime, claimed: list[Claimed]) -> list[Job]:
    with runtime.sessions() as session:
        events = {
            e.id: e for e in session.scalars(select(Event).where(Event.id.in_({c.event_id for c in claimed})))
        }
        integrations = {
            i.id: i
            for i in session.scalars(
                select(Integration).where(Integration.id.in_({c.integration_id for c in claimed}))
            )
        }
    messages: dict[uuid.UUID, RenderedMessage] = {}
    configs: dict[uuid.UUID, BaseModel | str] = {}
    jobs: list[Job] = []
    for c in claimed:
        event = events.get(c.event_id)
        integration = integrations.get(c.integration_id)
        policy = RetryPolicy.from_settings(
            runtime.settings,
            max_retries=integration.retry_max_retries if integration else None,
            base_delay_s=integration.retry_base_delay_s if integration else None,
        )
        if event is None or integration is None:
            jobs.append(Job(c, "unknown", None, None, policy, setup_error="event or integration deleted"))
            continue
        if c.event_id not in messages:
            messages[c.event_id] = render(event_facts(event))
        if c.integration_id not in configs:
            configs[c.integration_id] = _load_config(runtime, integration)
        config = configs[c.integration_id]
        if isinstance(config, str):
            jobs.append(Job(c, integration.provider, None, None, policy, setup_error=config))
        else:
            jobs.append(
                Job(
                    c,
                    integration.provider,
                    messages[c.event_id],
                    config,
                    policy,
                    accepted_at=event.created_at,
                )
            )
    return jobs


def _load_config(runtime: ProcessRuntime, integration: Integration) -> BaseModel | str:
    """The validated provider config, or a reason it cannot be used (never containing the secret)."""
    try:
        raw = decrypt_config(runtime.keyring, integration.id, integration.config_ciphertext)
        return registry.config_model(integration.provider).model_validate(raw)
    except DecryptError as exc:
        return f"config cannot be decrypted: {exc}"
    except registry.UnknownProvider:
        return f"unknown provider {integration.provider!r}"
    except ValidationError as exc:
        return f"stored config is invalid: {exc.error_count()} error(s)"


async def _send_one(runtime: ProcessRuntime, job: Job) -> Outcome:
    started_at = datetime.now(UTC)
    t0 = time.perf_counter()
    if job.setup_error is not None or job.message is None or job.config is None:
        return Outcome(job, started_at, 0.0, error=None)
    try:
        provider = runtime.provider(job.provider)
    except Exception as exc:
        return Outcome(job, started_at, 0.0, error=exc)
    timeout_s = float(getattr(job.config, "timeout_s", runtime.settings.send_timeout_s)) + SEND_GUARD_S
    try:
        receipt = await asyncio.wait_for(
            provider.send(
                job.message,
                job.config,
                idempotency_key=str(job.claimed.id),
                previous_ref=job.claimed.previous_ref,
                progress=job.claimed.progress,
            ),
            timeout=timeout_s,
        )
        return Outcome(job, started_at, (time.perf_counter() - t0) * 1000, receipt=receipt)
    except Exception as exc:
        return Outcome(job, started_at, (time.perf_counter() - t0) * 1000, error=exc)


async def _send_all(runtime: ProcessRuntime, jobs: list[Job]) -> list[Outcome]:
    metrics.WORKER_INFLIGHT.inc(len(jobs))
    try:
        return list(await asyncio.gather(*(_send_one(runtime, job) for job in jobs)))
    finally:
        metrics.WORKER_INFLIGHT.dec(len(jobs))


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
    config = _load_config(runtime, row)
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


def deliver_batch(delivery_ids: list[uuid.UUID]) -> int:
    runtime = get_runtime()
    claimed = claim(runtime, delivery_ids)
    if not claimed:
        return 0
    jobs = prepare(runtime, claimed)
    runtime.ensure_http()  # outside the loop: creating the client drives the loop itself
    outcomes = runtime.run(_send_all(runtime, jobs))
    record(runtime, outcomes)
    return len(outcomes)


@shared_task(name=TASK_DELIVER, ignore_result=True)
def deliver(delivery_ids: list[str]) -> int:
    ids: list[uuid.UUID] = []
    for raw in delivery_ids if isinstance(delivery_ids, list) else []:
        try:
            ids.append(uuid.UUID(str(raw)))
        except ValueError:
            log.error("deliver: malformed delivery id %r dropped", raw)
    return deliver_batch(ids) if ids else 0
