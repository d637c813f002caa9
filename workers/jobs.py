"""Preparing a claim: each integration's config, each delivery's lease, and each claimed delivery's job.

Split from workers/dispatch.py (claim -> send -> record); workers/claiming.py calls these within the claim's
transaction.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping

from pydantic import BaseModel

from shared.db.models import Integration
from shared.deliveries import Claimed
from shared.events import EventFacts
from shared.rendering import RenderedMessage, render
from workers.configs import load_config
from workers.retry import RetryPolicy
from workers.runtime import ProcessRuntime
from workers.sending import Job, attempt_bound_s, lease_s

log = logging.getLogger(__name__)


def load_configs(
    runtime: ProcessRuntime, integrations: Iterable[Integration]
) -> dict[uuid.UUID, BaseModel | str]:
    """Each integration's config or why it cannot be used; one bad row never raises out of here."""
    configs: dict[uuid.UUID, BaseModel | str] = {}
    for integration in integrations:
        try:
            configs[integration.id] = load_config(runtime.keyring, integration)
        except Exception as exc:
            log.exception("integration %s: its config could not be loaded", integration.id)
            configs[integration.id] = f"config could not be loaded: {type(exc).__name__}"
    return configs


def leases_for(
    runtime: ProcessRuntime,
    candidates: Iterable[tuple[uuid.UUID, uuid.UUID]],
    configs: dict[uuid.UUID, BaseModel | str],
) -> dict[uuid.UUID, float]:
    """(delivery id, integration id) -> the lease each claim takes, from its config's longest attempt."""
    leases: dict[uuid.UUID, float] = {}
    for delivery_id, integration_id in candidates:
        if integration_id not in configs:
            continue  # integration deleted since: its delivery rows went with it
        config = configs[integration_id]
        usable = None if isinstance(config, str) else config
        leases[delivery_id] = lease_s(attempt_bound_s(usable, runtime.settings), runtime.settings)
    return leases


def build_jobs(
    runtime: ProcessRuntime,
    claimed: list[Claimed],
    events: Mapping[uuid.UUID, EventFacts],
    integrations: dict[uuid.UUID, Integration],
    configs: dict[uuid.UUID, BaseModel | str],
) -> list[Job]:
    """A job per claimed delivery: its sender, config and message (rendered once per event), or why it cannot
    be sent (`setup_error`, recorded as the attempt's outcome)."""
    messages: dict[uuid.UUID, RenderedMessage | str] = {}
    jobs: list[Job] = []
    for c in claimed:
        integration = integrations[c.integration_id]
        policy = RetryPolicy.from_settings(
            runtime.settings,
            max_retries=integration.retry_max_retries,
            base_delay_s=integration.retry_base_delay_s,
        )
        config = configs[c.integration_id]
        job = Job(c, integration.provider, None, None, policy, runtime.settings.send_timeout_s)
        job.integration_failing = bool(integration.failing)
        jobs.append(job)
        if isinstance(config, str):
            job.setup_error = config
            continue
        event = events[c.event_id]
        if c.event_id not in messages:
            try:
                messages[c.event_id] = render(event)
            except Exception as exc:
                log.exception("event %s could not be rendered", c.event_id)
                messages[c.event_id] = f"event could not be rendered: {type(exc).__name__}"
        message = messages[c.event_id]
        if isinstance(message, str):
            job.setup_error = message
            continue
        try:
            # Created here, on the task thread: creating a provider needs the loop itself.
            job.sender = runtime.provider(integration.provider)
        except Exception as exc:
            log.exception("provider %s could not be created", integration.provider)
            job.setup_error = f"provider {integration.provider!r} could not be created: {type(exc).__name__}"
            continue
        job.message, job.config, job.accepted_at = message, config, event.created_at
        job.attempt_s = attempt_bound_s(config, runtime.settings)
    return jobs
