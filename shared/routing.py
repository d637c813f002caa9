"""Which integrations an event goes to: a pure function of the event and the routes (no I/O).

A route matches when its project is the event's or NULL (catch-all), its environments and event types are
empty (= all) or contain the event's (types may be patterns such as `release.*`), and the event is at least
its minimum severity. An integration bound to a project only ever receives that project's events.
An event goes to each integration once, however many routes lead there.
"""

from __future__ import annotations

import fnmatch
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from shared.events import EventFacts, severity_at_least


@dataclass(frozen=True)
class RouteRule:
    id: uuid.UUID
    integration_id: uuid.UUID
    project: str | None
    environments: Sequence[str]
    event_types: Sequence[str]
    min_severity: str


@dataclass(frozen=True)
class IntegrationTarget:
    id: uuid.UUID
    provider: str
    project: str | None
    enabled: bool


@dataclass(frozen=True)
class PlannedDelivery:
    integration_id: uuid.UUID
    # "pending" to send; "skipped" when the integration is disabled (kept so it can be replayed)
    state: str


def route_mismatch(event: EventFacts, route: RouteRule) -> str | None:
    """Why `route` does not match `event`, or None when it does."""
    if route.project is not None and route.project != event.project:
        return f"project {event.project!r} is not {route.project!r}"
    if route.environments and event.environment not in route.environments:
        return f"environment {event.environment!r} not in {list(route.environments)}"
    if route.event_types and not any(_type_matches(event.type, p) for p in route.event_types):
        return f"event type {event.type!r} not in {list(route.event_types)}"
    if not severity_at_least(event.severity, route.min_severity):
        return f"severity {event.severity!r} below {route.min_severity!r}"
    return None


def _type_matches(event_type: str, pattern: str) -> bool:
    return event_type == pattern or fnmatch.fnmatchcase(event_type, pattern)


def plan(
    event: EventFacts,
    routes: Iterable[RouteRule],
    integrations: dict[uuid.UUID, IntegrationTarget],
) -> list[PlannedDelivery]:
    planned: dict[uuid.UUID, PlannedDelivery] = {}
    for route in routes:
        target = integrations.get(route.integration_id)
        if target is None or route.integration_id in planned:
            continue
        if target.project is not None and target.project != event.project:
            continue
        if route_mismatch(event, route) is not None:
            continue
        planned[target.id] = PlannedDelivery(target.id, "pending" if target.enabled else "skipped")
    return list(planned.values())
