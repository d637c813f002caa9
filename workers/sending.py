"""Sending a claimed batch: claim rows, build one job per delivery, send them all on the process's event loop.

Used by the `deliver` task (a batch of ids from Redis) and by `fanout` (which claims the deliveries it has just
created and sends them at once, sparing a Celery message and three statements per event).

Every outcome update is guarded by (state = 'sending', attempt_count = the claimed attempt), see outcomes.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import BaseModel, ValidationError
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from providers import registry
from providers.base import Receipt
from shared import metrics
from shared.crypto import DecryptError
from shared.db.models import Event, Integration
from shared.db.sql import any_of
from shared.rendering import RenderedMessage, render
from shared.secrets_at_rest import decrypt_config
from workers.retry import RetryPolicy
from workers.runtime import ProcessRuntime

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
        claimed = claim_in(session, runtime, ids)
        session.commit()
    return claimed


def claim_in(session: Session, runtime: ProcessRuntime, ids: list[uuid.UUID]) -> list[Claimed]:
    """Claim within the caller's transaction (fan-out claims the rows it inserts before committing)."""
    rows = session.execute(CLAIM_SQL, {"ids": ids, "lease_s": runtime.settings.sending_lease_s}).all()
    return [
        Claimed(
            r.id, r.event_id, r.integration_id, r.attempt_count, r.provider_ref, r.previous_ref, r.progress
        )
        for r in rows
    ]


def load_rows(
    runtime: ProcessRuntime, claimed: list[Claimed]
) -> tuple[dict[uuid.UUID, Event], dict[uuid.UUID, Integration]]:
    with runtime.sessions() as session:
        events = {
            e.id: e
            for e in session.scalars(select(Event).where(any_of(Event.id, {c.event_id for c in claimed})))
        }
        integrations = {
            i.id: i
            for i in session.scalars(
                select(Integration).where(any_of(Integration.id, {c.integration_id for c in claimed}))
            )
        }
    return events, integrations


def prepare(
    runtime: ProcessRuntime,
    claimed: list[Claimed],
    events: dict[uuid.UUID, Event],
    integrations: dict[uuid.UUID, Integration],
) -> list[Job]:
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
            messages[c.event_id] = render(event.facts())
        if c.integration_id not in configs:
            configs[c.integration_id] = load_config(runtime, integration)
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


def load_config(runtime: ProcessRuntime, integration: Integration) -> BaseModel | str:
    """The validated provider config, or a reason it cannot be used (never containing the secret).

    Cached per process by the ciphertext itself, so any change to the stored config is a new entry."""
    key = (integration.id, integration.provider, hashlib.sha256(integration.config_ciphertext).digest())
    with _config_lock:
        cached = _config_cache.get(key)
    if cached is None:
        cached = _decrypt_and_validate(runtime, integration)
        with _config_lock:
            if len(_config_cache) >= CONFIG_CACHE_ENTRIES:
                _config_cache.pop(next(iter(_config_cache)))
            _config_cache[key] = cached
    return cached


CONFIG_CACHE_ENTRIES = 2048
_config_cache: dict[tuple[uuid.UUID, str, bytes], BaseModel | str] = {}
_config_lock = threading.Lock()


def _decrypt_and_validate(runtime: ProcessRuntime, integration: Integration) -> BaseModel | str:
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


def send_claimed(
    runtime: ProcessRuntime,
    claimed: list[Claimed],
    events: dict[uuid.UUID, Event] | None = None,
    integrations: dict[uuid.UUID, Integration] | None = None,
) -> int:
    """Send claimed deliveries and record the outcomes; rows already loaded by the caller are reused."""
    from workers.outcomes import record  # outcomes imports this module's dataclasses

    if not claimed:
        return 0
    if events is None or integrations is None:
        events, integrations = load_rows(runtime, claimed)
    jobs = prepare(runtime, claimed, events, integrations)
    for job in jobs:  # created here, on this task thread: creating them needs the loop itself
        if job.setup_error is None:
            runtime.provider(job.provider)
    outcomes = runtime.run(_send_all(runtime, jobs))
    record(runtime, outcomes)
    return len(outcomes)
