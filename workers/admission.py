"""Admission: which claimable deliveries may be sent now, and what waits (not an attempt) or is parked.

The one place where the circuit (workers/circuits.py), the per-process bulkhead and the shared limiter
(workers/pacing.py) are asked, in that order, before a claim: an open circuit holds its integration's
deliveries, a full bulkhead parks them in the process (or, past its parking room, moves them to `waiting`), and
the limiter gives each the rest a slot now or a wait.
"""

from __future__ import annotations

import uuid

from pydantic import BaseModel
from sqlalchemy.orm import Session

from providers.destinations import Rate, default_rate, destination_key
from shared import deliveries, metrics
from shared.db.models import Integration
from workers import circuits
from workers.pacing import Ask, get_pacer
from workers.runtime import ProcessRuntime


def integration_rate(integration: Integration) -> Rate | None:
    """The destination's pace: the integration's override, else its provider's documented default."""
    default = default_rate(integration.provider)
    if integration.pace_per_s is not None:
        return Rate(integration.pace_per_s, integration.pace_burst or (default.burst if default else 1))
    if default is not None and integration.pace_burst is not None:
        return Rate(default.per_s, integration.pace_burst)
    return default


def admit(
    session: Session,
    runtime: ProcessRuntime,
    leases: dict[uuid.UUID, float],
    integrations: dict[uuid.UUID, Integration],
    configs: dict[uuid.UUID, BaseModel | str],
    integration_of: dict[uuid.UUID, uuid.UUID],
) -> tuple[dict[uuid.UUID, str], list[Ask]]:
    """Hold back what its destination has no room for, or what its circuit holds (workers/circuits.py): parked
    (unclaimed, in this process) or `waiting` (no attempt used); return the bulkhead place (delivery id ->
    destination) of each delivery left in `leases` to claim, and the ones to park.

    Bulkhead first (local, free), then the shared limiter for those that fit. A row of a disabled integration
    or with an unusable config is left to the claim, which skips or dead-letters it."""
    pacer = get_pacer(runtime.settings)
    # An open circuit holds its integration's deliveries (all but its probe) before they ask the limiter.
    circuit_held = circuits.holds(runtime.settings, integrations, integration_of, leases)
    asks: list[Ask] = []
    for delivery_id in leases:
        if delivery_id in circuit_held:
            continue
        integration = integrations[integration_of[delivery_id]]
        config = configs[integration.id]
        if not integration.enabled or isinstance(config, str):
            continue
        asks.append(
            Ask(
                delivery_id,
                integration.provider,
                destination_key(integration.provider, config),
                integration_rate(integration),
            )
        )
    entered, over = pacer.enter(asks)
    parked, over = pacer.parkable(over)
    for a in parked:
        leases.pop(a.delivery_id, None)
    waits = {a.delivery_id: (runtime.settings.bulkhead_wait_s, "bulkhead") for a in over}
    paced = pacer.waits(entered)
    pacer.leave(a.destination for a in entered if a.delivery_id in paced)
    waits.update(paced)
    waits.update((d, (w, "circuit")) for d, w in circuit_held.items())
    if waits:
        held = set(deliveries.wait(session, {d: w for d, (w, _) in waits.items()}))
        provider_of = {d: integrations[integration_of[d]].provider for d in waits}
        for delivery_id, (_, reason) in waits.items():
            leases.pop(delivery_id, None)
            if delivery_id in held:
                metrics.PACED_WAITS.labels(provider_of[delivery_id], reason).inc()
    return {a.delivery_id: a.destination for a in entered if a.delivery_id not in paced}, parked
