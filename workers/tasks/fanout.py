"""Fan-out: events -> one delivery row per (event, matching integration), then `deliver` batches on Redis.

A task carries a batch of event ids (the API coalesces its publishes): their routes, integrations and earlier
routes and integrations are read in one query each, all rows go in with one INSERT, and the new deliveries of all
events are sent together: the first `fanout_inline_max` of them (when the process has room) are claimed in the
fan-out transaction and handed to this process's send loop (no second Celery message, no claim or reload round
trips: an event going to a few integrations, or to a thousand, costs one task), and the rest are published as
`deliver` batches for other workers. Fan-out never waits on a destination: the task returns once the sends are
handed off, and when the process has no room for more sends it publishes them all instead
(workers/dispatch.py).

Idempotent: delivery rows are unique per (event, integration), so a re-run inserts nothing new. If publishing
fails after the commit, the rows wait as `pending` with `queued_at` set and the sweeper publishes them once
`requeue_after_s` has passed.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import Any, cast

from celery import shared_task
from sqlalchemy import Table, any_, func, select, text, update
from sqlalchemy.orm import Session

from shared import metrics
from shared.db.models import (
    EVENT_FACT_COLUMNS,
    ROUTE_RULE_COLUMNS,
    Event,
    Integration,
    Route,
)
from shared.db.rows import event_facts, route_rule
from shared.db.sql import text_array_param, uuid_array_param
from shared.deliveries import DeliveryState
from shared.routing import RouteRule, plan
from shared.tasknames import TASK_FANOUT
from workers import claiming, dispatch
from workers.pacing import Ask
from workers.publish import publish_deliver_batches
from workers.runtime import ProcessRuntime, get_runtime
from workers.sending import Job

log = logging.getLogger(__name__)

# Rows per INSERT statement: large fan-outs (one event to thousands of integrations) stay within sane sizes.
INSERT_CHUNK_ROWS = 1000

# One statement text for any number of rows (arrays, not a VALUES list), so it is parsed and planned once.
# Pending rows are marked as published (queued_at) in the same insert: if the publish is lost, the sweeper
# republishes them after requeue_after_s.
INSERT_DELIVERIES_SQL = text(
    """
    INSERT INTO delivery (id, event_id, integration_id, state, queued_at, lifecycle_key)
    SELECT u.id, u.event_id, u.integration_id, u.state,
           CASE WHEN u.state = 'pending' THEN now() END, u.lifecycle_key
      FROM unnest(CAST(:ids AS uuid[]), CAST(:event_ids AS uuid[]), CAST(:integration_ids AS uuid[]),
                  CAST(:states AS text[]), CAST(:lifecycle_keys AS text[]))
           AS u(id, event_id, integration_id, state, lifecycle_key)
    ON CONFLICT ON CONSTRAINT delivery_event_integration_key DO NOTHING
    RETURNING id, state, integration_id
    """
)


@dataclass
class FanoutResult:
    #: claimed in the fan-out transaction, handed to this process's send loop
    inline: list[Job] = field(default_factory=list)
    #: pending, published as `deliver` batches
    to_publish: list[uuid.UUID] = field(default_factory=list)
    #: over their destination's bulkhead: parked in this process (workers/pacing.py), holding their room
    parked: list[Ask] = field(default_factory=list)
    #: past the parking places of a destination draining a burst: queued in this process, holding no room
    queued: list[Ask] = field(default_factory=list)
    #: due at a rate slot a few seconds away: held on this process's timer (workers/wakeups.py)
    held: dict[uuid.UUID, float] = field(default_factory=dict)


def _take_events_sql() -> Any:
    """Take the events not fanned out yet (skipping those another worker holds) and mark them fanned out, in
    one statement returning their facts; the transaction's commit is what makes it so. Parameter: `event_ids`."""
    table = cast(Table, Event.__table__)
    taken = (
        select(table.c.id)
        .where(table.c.id == any_(uuid_array_param("event_ids")), table.c.fanned_out_at.is_(None))
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    return (
        update(table)
        .where(table.c.id.in_(taken))
        .values(fanned_out_at=func.now())
        .returning(*EVENT_FACT_COLUMNS)
    )


def _routes_sql() -> Any:
    """The routes that can match events of these projects (catch-alls included), as RouteRule columns.
    Parameter: `projects`."""
    route = Route.__table__.c
    return select(*ROUTE_RULE_COLUMNS).where(
        route.project.is_(None) | (route.project == any_(text_array_param("projects")))
    )


# Built once: see shared/db/sql.py.
TAKE_EVENTS_SQL = _take_events_sql()
ROUTES_SQL = _routes_sql()


def fan_out_events(runtime: ProcessRuntime, event_ids: list[uuid.UUID], *, inline_limit: int) -> FanoutResult:
    """Insert the delivery rows of every event not fanned out yet, claiming up to `inline_limit` of them for
    this task to send at once; the rest are returned to be published.

    Events another worker is fanning out right now are skipped (SKIP LOCKED), as are events already done.
    """
    with runtime.sessions() as session:
        facts = [event_facts(row) for row in session.execute(TAKE_EVENTS_SQL, {"event_ids": event_ids})]
        if not facts:
            session.rollback()
            return FanoutResult()
        routes = _routes_for(session, {f.project for f in facts})
        integrations = _integrations_for(session, {r.integration_id for r in routes})
        targets = {i.id: i.target() for i in integrations.values()}
        rows: list[tuple[uuid.UUID, uuid.UUID, str, str | None]] = []
        for fact in facts:
            for p in plan(fact, routes, targets):
                # In a lifecycle group, the claim decides root or edit (and of which message): see
                # shared/delivery_lifecycles.py. Off: every state is a message of its own.
                rows.append(
                    (fact.id, p.integration_id, p.state, fact.lifecycle_key if p.edit_in_place else None)
                )
        new_pending: list[tuple[uuid.UUID, uuid.UUID]] = []
        lifecycle_keys: dict[uuid.UUID, str | None] = {}
        fanned: list[str] = []  # counted once committed
        skipped: list[str] = []
        for start in range(0, len(rows), INSERT_CHUNK_ROWS):
            chunk = rows[start : start + INSERT_CHUNK_ROWS]
            ids = [uuid.uuid4() for _ in chunk]
            inserted = session.execute(
                INSERT_DELIVERIES_SQL,
                {
                    "ids": ids,
                    "event_ids": [r[0] for r in chunk],
                    "integration_ids": [r[1] for r in chunk],
                    "states": [r[2] for r in chunk],
                    "lifecycle_keys": [r[3] for r in chunk],
                },
            )
            lifecycle_of = dict(zip(ids, (r[3] for r in chunk), strict=True))
            for delivery_id, state, integration_id in inserted:
                fanned.append(state)
                if state == DeliveryState.PENDING:
                    new_pending.append((delivery_id, integration_id))
                    lifecycle_keys[delivery_id] = lifecycle_of[delivery_id]
                else:
                    skipped.append(targets[integration_id].provider)
        claim = claiming.claim_jobs(
            session,
            runtime,
            new_pending[:inline_limit],
            {f.id: f for f in facts},
            integrations,
            lifecycle_keys,
        )
        session.commit()
    for state in fanned:
        metrics.FANOUT_DELIVERIES.labels(state).inc()
    # skipped at insert (integration disabled), besides those skipped at claim
    claiming.count_unsent(skipped + claim.skipped_providers, claim.superseded_providers)
    # Every row offered to the claim is settled by it: claimed, or held back in PostgreSQL (waiting, an update
    # waiting for its root, superseded, skipped) where the sweeper picks it up when due. Publishing one of those
    # would be a `deliver` task that finds nothing to claim.
    return FanoutResult(
        claim.jobs, [d for d, _ in new_pending[inline_limit:]], claim.parked, claim.queued, claim.held
    )


def _routes_for(session: Session, projects: set[str]) -> list[RouteRule]:
    return [route_rule(r) for r in session.execute(ROUTES_SQL, {"projects": sorted(projects)})]


def _integrations_for(session: Session, integration_ids: set[uuid.UUID]) -> dict[uuid.UUID, Integration]:
    if not integration_ids:
        return {}
    return {i.id: i for i in session.scalars(claiming.INTEGRATIONS_SQL, {"ids": list(integration_ids)})}


def _reserve_room(runtime: ProcessRuntime) -> int:
    """Room for this task's own sends: up to `fanout_inline_max`, else a `deliver` batch's worth, else none
    (the process is full: every new delivery goes to Redis for whichever worker has room)."""
    s = runtime.settings
    for room in dict.fromkeys((s.fanout_inline_max, min(s.deliver_batch_size, s.fanout_inline_max))):
        if dispatch.try_reserve(runtime, room):
            return room
    return 0


@shared_task(name=TASK_FANOUT, ignore_result=True)
def fanout(event_ids: list[str] | str) -> int:
    """Fan out a batch of events (the API coalesces its publishes); a single id is accepted too."""
    raw_ids = [event_ids] if isinstance(event_ids, str) else event_ids if isinstance(event_ids, list) else []
    parsed: list[uuid.UUID] = []
    for raw in raw_ids:
        try:
            parsed.append(uuid.UUID(str(raw)))
        except ValueError:
            log.error("fanout: malformed event id %r dropped", raw)
    if not parsed:
        return 0
    runtime = get_runtime()
    room = _reserve_room(runtime)
    held = 0
    try:
        result = fan_out_events(runtime, parsed, inline_limit=room)
        held = len(result.inline) + len(result.parked)
    finally:
        dispatch.release_reserved(runtime, room - held)
    publish_deliver_batches(result.to_publish)
    dispatch.hand_off(runtime, result.inline)
    dispatch.park(runtime, result.parked)
    dispatch.queue(runtime, result.queued)
    dispatch.hold(runtime, result.held)
    return len(result.inline) + len(result.to_publish)
