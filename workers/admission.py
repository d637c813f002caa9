"""Admission: which claimable deliveries may be sent now, and what waits (not an attempt) or is parked.

The one place where the circuit (workers/circuits.py), the per-process bulkhead and the shared limiter
(workers/pacing.py) are asked, in that order, before a claim: an open circuit holds its integration's
deliveries, a full bulkhead parks them in the process (past its parking room, queues those of a destination
draining a burst in the process's backlog, and moves the rest to `waiting`), and
the limiter gives each the rest a slot now or a wait: a short one on the process's timer (workers/wakeups.py),
a longer one in `waiting` for the sweeper.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

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


@dataclass
class Admitted:
    """What admission made of the candidates it did not leave in `leases` to claim."""

    #: delivery id -> its bulkhead place (destination), for each delivery left in `leases` to claim
    places: dict[uuid.UUID, str]
    #: over their destination's bulkhead: park them after the commit
    parked: list[Ask]
    #: past the parking places of a destination draining a burst: `queue` them after the commit
    queued: list[Ask]
    #: delivery id -> seconds to its slot, held on the process's timer: `hold` them after the commit
    held: dict[uuid.UUID, float]


def admit(
    session: Session,
    runtime: ProcessRuntime,
    leases: dict[uuid.UUID, float],
    integrations: dict[uuid.UUID, Integration],
    configs: dict[uuid.UUID, BaseModel | str],
    integration_of: dict[uuid.UUID, uuid.UUID],
) -> Admitted:
    """Hold back what its destination has no room for, or what its circuit holds (workers/circuits.py): parked
    (unclaimed, in this process), held for a slot a few seconds away (the row due then, on this process's
    timer) or `waiting` (no attempt used); return what is left in `leases` to claim with its bulkhead place.

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
    parked, queued, over = pacer.parkable(over)
    for a in (*parked, *queued):
        leases.pop(a.delivery_id, None)
    waits = {a.delivery_id: (runtime.settings.bulkhead_wait_s, "bulkhead") for a in over}
    paced = pacer.waits(entered)
    pacer.leave(a.destination for a in entered if a.delivery_id in paced)
    # A slot a few seconds away is waited for on this process's timer (workers/wakeups.py), not the sweeper's.
    hold_max_s = runtime.settings.pacing_hold_max_s
    timed = {d: w for d, (w, _) in paced.items() if w <= hold_max_s}
    waits.update((d, v) for d, v in paced.items() if d not in timed)
    waits.update((d, (w, "circuit")) for d, w in circuit_held.items())
    held_for: dict[uuid.UUID, float] = {}
    if timed:
        held_ids = set(deliveries.hold(session, timed))
        held_for = {d: w for d, w in timed.items() if d in held_ids}
        for delivery_id in timed:
            leases.pop(delivery_id, None)
            if delivery_id in held_ids:
                metrics.PACED_WAITS.labels(integrations[integration_of[delivery_id]].provider, "rate").inc()
    if waits:
        held = set(deliveries.wait(session, {d: w for d, (w, _) in waits.items()}))
        provider_of = {d: integrations[integration_of[d]].provider for d in waits}
        for delivery_id, (_, reason) in waits.items():
            leases.pop(delivery_id, None)
            if delivery_id in held:
                metrics.PACED_WAITS.labels(provider_of[delivery_id], reason).inc()
    places = {a.delivery_id: a.destination for a in entered if a.delivery_id not in paced}
    return Admitted(places, parked, queued, held_for)
