"""Claiming, within the caller's transaction: the lifecycle gate, admission (circuits, bulkheads, pacing), the
claim itself and the jobs it makes, for fan-out's inline sends and for `deliver` batches alike.

The caller (workers/dispatch.py, workers/tasks/fanout.py) commits, then hands the jobs off and parks, queues or
holds what admission held back; nothing here touches the process's event loop or threads.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from sqlalchemy import any_, func, select, text
from sqlalchemy.orm import Session

from shared import deliveries, delivery_lifecycles, metrics
from shared.db.models import EVENT_FACT_COLUMNS, Delivery, Event, Integration
from shared.db.sql import uuid_array_param
from shared.deliveries import CLAIMABLE
from shared.events import EventFacts
from workers.admission import admit
from workers.jobs import build_jobs, leases_for, load_configs
from workers.pacing import Ask, get_pacer
from workers.runtime import ProcessRuntime
from workers.sending import Job

# The `deliver` task's reads, built once (shared/db/sql.py).
DELIVER_CANDIDATES_SQL = select(
    Delivery.id, Delivery.event_id, Delivery.integration_id, Delivery.lifecycle_key
).where(
    Delivery.id == any_(uuid_array_param("ids")),
    Delivery.state.in_(CLAIMABLE),
    # not due (a duplicate message): asking the limiter would take a slot for nothing
    Delivery.next_attempt_at <= func.now() + text("interval '50 milliseconds'"),
)
DELIVER_EVENTS_SQL = select(*EVENT_FACT_COLUMNS).where(Event.__table__.c.id == any_(uuid_array_param("ids")))
# Also fan-out's: both hand these Integration objects to claim_jobs.
INTEGRATIONS_SQL = select(Integration).where(Integration.id == any_(uuid_array_param("ids")))


@dataclass
class Claim:
    """What a claim made of its candidates (within the caller's transaction)."""

    #: claimed, ready to hand off once the caller has committed
    jobs: list[Job] = field(default_factory=list)
    #: the provider of each row skipped because its integration is disabled (counted after the commit)
    skipped_providers: list[str] = field(default_factory=list)
    #: the provider of each row the lifecycle gate superseded (in this batch or not: one count each; after the
    #: commit): a newer state of the lifecycle is, or will be, shown
    superseded_providers: list[str] = field(default_factory=list)
    #: over their destination's bulkhead, left pending and unclaimed: `park` them after the commit
    parked: list[Ask] = field(default_factory=list)
    #: past the parking places of a destination draining a burst, unclaimed: `queue` them after the commit
    queued: list[Ask] = field(default_factory=list)
    #: due at a slot a few seconds away, unclaimed: `hold` them after the commit (workers/wakeups.py)
    held: dict[uuid.UUID, float] = field(default_factory=dict)


def claim_jobs(
    session: Session,
    runtime: ProcessRuntime,
    candidates: list[tuple[uuid.UUID, uuid.UUID]],
    events: Mapping[uuid.UUID, EventFacts],
    integrations: dict[uuid.UUID, Integration],
    lifecycle_keys: Mapping[uuid.UUID, str | None] | None = None,
) -> Claim:
    """Claim (delivery id, integration id) candidates within the caller's transaction.

    `lifecycle_keys` (delivery id -> its lifecycle key), when the caller has read the candidates as due and
    claimable in this transaction (or just inserted them), spares the lifecycle gate a read.

    The caller commits, then hands the jobs off, parks the parked ones and counts the skipped and superseded
    ones (`count_unsent`). Each candidate ends claimed, parked, or settled in PostgreSQL (skipped, waiting,
    superseded, an update waiting for its root), unless someone else holds it."""
    if not candidates:
        return Claim()
    candidates, superseded = _ordered_in_lifecycles(session, candidates, lifecycle_keys)
    superseded_providers = [integrations[i].provider for i in superseded if i in integrations]
    configs = load_configs(runtime, integrations.values())
    leases = leases_for(runtime, candidates, configs)
    admitted = admit(session, runtime, leases, integrations, configs, dict(candidates))
    places = admitted.places
    try:
        claimed, skipped = deliveries.claim(session, leases)
    except BaseException:
        get_pacer(runtime.settings).leave(places.values())
        raise
    integration_of = dict(candidates)
    skipped_providers = [integrations[integration_of[d]].provider for d in skipped]
    jobs = build_jobs(runtime, claimed, events, integrations, configs)
    for job in jobs:
        job.destination = places.pop(job.id, None)
    get_pacer(runtime.settings).leave(places.values())  # places taken for rows someone else claimed
    return Claim(
        jobs, skipped_providers, superseded_providers, admitted.parked, admitted.queued, admitted.held
    )


def _ordered_in_lifecycles(
    session: Session,
    candidates: list[tuple[uuid.UUID, uuid.UUID]],
    lifecycle_keys: Mapping[uuid.UUID, str | None] | None,
) -> tuple[list[tuple[uuid.UUID, uuid.UUID]], list[uuid.UUID]]:
    """The candidates a lifecycle lets go now (an update waits for its root, older states are superseded),
    and the integration of every row the gate superseded (in this batch or not: one count each)."""
    known = None
    if lifecycle_keys is not None:
        known = {d: (key, i) if (key := lifecycle_keys.get(d)) else None for d, i in candidates}
    gated = delivery_lifecycles.gate(session, [d for d, _ in candidates], known)
    allowed = [(d, i) for d, i in candidates if d in gated.allowed]
    return allowed, [gated.superseded[d] for d in sorted(gated.superseded)]


def count_unsent(skipped: Iterable[str], superseded: Iterable[str] = ()) -> None:
    """Count the deliveries a claim settled without an attempt, by provider (after the commit that settled them).

    `superseded` is an outcome of its own, not a failure: success ratios (delivered / (delivered + dead)) leave
    it out, and the rate by outcome shows how much lifecycle churn the ordering absorbed."""
    for provider in skipped:
        metrics.DELIVERIES.labels(provider, "skipped", "").inc()
    for provider in superseded:
        metrics.DELIVERIES.labels(provider, "superseded", "").inc()
