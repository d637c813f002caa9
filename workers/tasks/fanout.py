"""Fan-out: one event -> one delivery row per matching integration, then `deliver` batches on Redis.

Idempotent: delivery rows are unique per (event, integration), so a re-run inserts nothing new. If publishing
fails after the commit, the rows wait as `pending` with `queued_at` set and the sweeper publishes them once
`requeue_after_s` has passed.
"""

from __future__ import annotations

import logging
import uuid

from celery import shared_task
from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from shared import metrics
from shared.db.models import Delivery, Event, Integration, Route
from shared.events import EventFacts
from shared.routing import IntegrationTarget, RouteRule, plan
from shared.tasknames import TASK_FANOUT
from workers.publish import publish_deliver_batches
from workers.runtime import get_runtime

log = logging.getLogger(__name__)


def event_facts(event: Event) -> EventFacts:
    return EventFacts(
        id=event.id,
        kind=event.kind,
        type=event.type,
        project=event.project,
        environment=event.environment,
        severity=event.severity,
        payload=event.payload,
        created_at=event.created_at,
        lifecycle_key=event.lifecycle_key,
    )


def fan_out_event(event_id: uuid.UUID) -> list[uuid.UUID]:
    """Insert the event's delivery rows; return the ids of new pending ones (to publish)."""
    runtime = get_runtime()
    with runtime.sessions() as session:
        event = session.get(Event, event_id)
        if event is None:
            log.warning("fanout: event %s does not exist (deleted?)", event_id)
            return []
        facts = event_facts(event)
        routes = [
            RouteRule(
                r.id,
                r.integration_id,
                r.project,
                r.environments,
                r.event_types,
                r.min_severity,
                apps=r.apps,
                clusters=r.clusters,
                pipelines=r.pipelines,
            )
            for r in session.scalars(
                select(Route).where((Route.project.is_(None)) | (Route.project == facts.project))
            )
        ]
        targets = (
            {
                i.id: IntegrationTarget(i.id, i.provider, i.project, i.enabled)
                for i in session.scalars(
                    select(Integration).where(Integration.id.in_({r.integration_id for r in routes}))
                )
            }
            if routes
            else {}
        )
        planned = plan(facts, routes, targets)
        new_pending: list[uuid.UUID] = []
        if planned:
            # Pending rows are marked as published (queued_at) in the same insert: if the publish below is
            # lost, the sweeper republishes them after requeue_after_s.
            previous = _previous_refs(session, facts, [p.integration_id for p in planned])
            rows = [
                {
                    "id": uuid.uuid4(),
                    "event_id": event_id,
                    "integration_id": p.integration_id,
                    "state": p.state,
                    "queued_at": func.now() if p.state == "pending" else None,
                    "previous_ref": previous.get(p.integration_id),
                }
                for p in planned
            ]
            stmt = (
                insert(Delivery)
                .values(rows)
                .on_conflict_do_nothing(constraint="delivery_event_integration_key")
                .returning(Delivery.id, Delivery.state, Delivery.integration_id)
            )
            inserted = list(session.execute(stmt))
            new_pending = [d_id for d_id, state, _ in inserted if state == "pending"]
            for _d_id, state, integration_id in inserted:
                metrics.FANOUT_DELIVERIES.labels(state).inc()
                if state == "skipped":
                    metrics.DELIVERIES.labels(targets[integration_id].provider, "skipped", "").inc()
        session.execute(
            update(Event)
            .where(Event.id == event_id, Event.fanned_out_at.is_(None))
            .values(fanned_out_at=func.now())
        )
        session.commit()
    return new_pending


def _previous_refs(
    session: Session, facts: EventFacts, integration_ids: list[uuid.UUID]
) -> dict[uuid.UUID, str]:
    """Per integration, the message reference of the latest delivered event of the same lifecycle."""
    if not facts.lifecycle_key:
        return {}
    rows = session.execute(
        select(Delivery.integration_id, Delivery.provider_ref)
        .join(Event, Event.id == Delivery.event_id)
        .where(
            Event.lifecycle_key == facts.lifecycle_key,
            Event.id != facts.id,
            Delivery.integration_id.in_(integration_ids),
            Delivery.state == "delivered",
            Delivery.provider_ref.is_not(None),
        )
        .order_by(Delivery.integration_id, Delivery.delivered_at.desc())
        .distinct(Delivery.integration_id)
    )
    return {integration_id: ref for integration_id, ref in rows if ref is not None}


@shared_task(name=TASK_FANOUT, ignore_result=True)
def fanout(event_id: str) -> int:
    try:
        parsed = uuid.UUID(event_id)
    except (ValueError, TypeError, AttributeError):
        log.error("fanout: malformed event id %r dropped", event_id)
        return 0
    pending = fan_out_event(parsed)
    publish_deliver_batches(pending)
    return len(pending)
