"""Which integrations an event goes to: a pure function of the event and the routes (no I/O).

A route matches when, in this order:
- its project is the event's or NULL (catch-all);
- its environments are empty (= all) or contain the event's;
- its event types are empty (= all) or one of them matches the event's type (`type_matches`);
- for pipeline events only, its apps, clusters and pipelines are each empty (= all current and future, seed 003)
  or contain the event's (these filters say nothing about release or incident events);
- the event is at least its minimum severity.
An integration bound to a project only ever receives that project's events.
An event goes to each integration once, however many routes lead there.
Herald's operational events (kind `herald`: an integration failing, recovered or disabled, dead letters
growing) match only routes that name them (`herald.*`, `herald.integration.failing`, the bare kind `herald`):
a route for "all events" never pages anyone about Herald itself. One is never routed to the integration it is
about (its payload's `integration_id`), which is failing.
"""

from __future__ import annotations

import fnmatch
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from shared.events import OPERATIONAL_KIND, EventFacts, severity_at_least

#: the event kinds a type pattern may start with
EVENT_KINDS = ("release", "pipeline", "incident", "thing", "message", OPERATIONAL_KIND)


@dataclass(frozen=True)
class RouteRule:
    id: uuid.UUID
    integration_id: uuid.UUID
    project: str | None
    environments: Sequence[str]
    event_types: Sequence[str]
    min_severity: str
    apps: Sequence[str] = ()
    clusters: Sequence[str] = ()
    pipelines: Sequence[str] = ()
    #: one message per lifecycle, edited in place; off = every state is a new message
    edit_in_place: bool = True


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
    #: the matching route's option: order this delivery within its lifecycle and edit the shown message
    edit_in_place: bool = True


def expand_type_pattern(pattern: str) -> list[str]:
    """`pipeline.success|failure` -> [`pipeline.success`, `pipeline.failure`].

    An alternative without a dot takes the prefix of the first one; one with a dot stands alone
    (`release.*|pipeline.failure`)."""
    alternatives = [a.strip() for a in pattern.split("|") if a.strip()]
    if not alternatives:
        return []
    first = alternatives[0]
    prefix = first.rsplit(".", 1)[0] + "." if "." in first else ""
    return [first] + [a if "." in a or not prefix else prefix + a for a in alternatives[1:]]


def type_matches(event_type: str, pattern: str) -> bool:
    """Exact (`release.created`), glob (`release.*`), alternatives (`pipeline.success|failure`), or a bare
    kind (`incident`, `release`) meaning every type of that kind."""
    for alternative in expand_type_pattern(pattern):
        if event_type == alternative or fnmatch.fnmatchcase(event_type, alternative):
            return True
        if "." not in alternative and event_type.startswith(alternative + "."):
            return True
    return False


def route_mismatch(event: EventFacts, route: RouteRule) -> str | None:
    """Why `route` does not match `event`, or None when it does."""
    if route.project is not None and route.project != event.project:
        return f"project {event.project!r} is not {route.project!r}"
    if event.kind == OPERATIONAL_KIND and not names_operational(route.event_types):
        return "operational events go only to routes that name them (herald.*)"
    if route.environments and event.environment not in route.environments:
        return f"environment {event.environment!r} not in {list(route.environments)}"
    if route.event_types and not any(type_matches(event.type, p) for p in route.event_types):
        return f"event type {event.type!r} not in {list(route.event_types)}"
    if event.kind == "pipeline":
        for label, key, allowed in (
            ("app", "app", route.apps),
            ("cluster", "cluster", route.clusters),
            ("pipeline", "pipeline", route.pipelines),
        ):
            value = event.payload.get(key)
            if allowed and value not in allowed:
                return f"{label} {value!r} not in {list(allowed)}"
    if not severity_at_least(event.severity, route.min_severity):
        return f"severity {event.severity!r} below {route.min_severity!r}"
    return None


def names_operational(patterns: Sequence[str]) -> bool:
    """Whether one of a route's type patterns names the operational kind explicitly (not a bare `*`)."""
    return any(
        alternative.split(".", 1)[0] == OPERATIONAL_KIND
        for pattern in patterns
        for alternative in expand_type_pattern(pattern)
    )


def target_mismatch(event: EventFacts, target: IntegrationTarget) -> str | None:
    """Why the integration itself refuses the event (bound to another project, or the integration an
    operational event is about), or None."""
    if target.project is not None and target.project != event.project:
        return f"integration is bound to project {target.project!r}"
    if event.kind == OPERATIONAL_KIND and event.payload.get("integration_id") == str(target.id):
        return "an operational event is never sent to the integration it is about"
    return None


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
        if target_mismatch(event, target) is not None:
            continue
        if route_mismatch(event, route) is not None:
            continue
        planned[target.id] = PlannedDelivery(
            target.id, "pending" if target.enabled else "skipped", route.edit_in_place
        )
    return list(planned.values())
