"""Rows of the hot path as the pure code sees them: an event's EventFacts, a route's RouteRule.

One mapping for both an ORM instance (Event.facts(), Route.rule()) and a Core row of the same column names
(shared/db/models.py: EVENT_FACT_COLUMNS, ROUTE_RULE_COLUMNS), so fan-out and claims can skip loading mapped
instances without a second copy of the mapping.
"""

from __future__ import annotations

from typing import Any

from shared.events import EventFacts
from shared.routing import RouteRule


def event_facts(row: Any) -> EventFacts:
    """The EventFacts of a row of EVENT_FACT_COLUMNS (as Event.facts())."""
    return EventFacts(
        id=row.id,
        kind=row.kind,
        type=row.type,
        project=row.project,
        environment=row.environment,
        severity=row.severity,
        payload=row.payload,
        created_at=row.created_at,
        lifecycle_key=row.lifecycle_key,
    )


def route_rule(row: Any) -> RouteRule:
    """The RouteRule of a row of ROUTE_RULE_COLUMNS (as Route.rule())."""
    return RouteRule(
        row.id,
        row.integration_id,
        row.project,
        row.environments,
        row.event_types,
        row.min_severity,
        apps=row.apps,
        clusters=row.clusters,
        pipelines=row.pipelines,
        edit_in_place=row.edit_in_place,
    )
