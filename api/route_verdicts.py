"""Why each route does or does not lead an event to its integration: the one loop behind the routes dry run
(`POST /v1/routes/explain`) and the "why no deliveries" of `GET /v1/events/{id}`.

It applies the pure routing rules (`shared.routing.target_mismatch`, `route_mismatch`) in the order fan-out's
`plan()` does, and says for each route what the delivery would be: `pending`, `skipped` (integration
disabled), or None (no match, or an earlier route already leads to the same integration).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.db.models import Integration, Route
from shared.events import EventFacts
from shared.routing import route_mismatch, target_mismatch


@dataclass(frozen=True)
class RouteVerdict:
    route: Route
    integration: Integration
    #: why the route does not match; None when it does
    reason: str | None
    would_deliver: Literal["pending", "skipped"] | None


def load_routes(session: Session) -> tuple[list[Route], dict[uuid.UUID, Integration]]:
    """Every route (in fan-out's order) and the integrations they lead to."""
    routes = list(session.scalars(select(Route).order_by(Route.created_at, Route.id)))
    if not routes:
        return routes, {}
    ids = {r.integration_id for r in routes}
    return routes, {i.id: i for i in session.scalars(select(Integration).where(Integration.id.in_(ids)))}


def route_verdicts(
    facts: EventFacts, routes: list[Route], integrations: dict[uuid.UUID, Integration]
) -> list[RouteVerdict]:
    planned: set[uuid.UUID] = set()
    out: list[RouteVerdict] = []
    for route in routes:
        integration = integrations[route.integration_id]
        reason = target_mismatch(facts, integration.target()) or route_mismatch(facts, route.rule())
        would: Literal["pending", "skipped"] | None = None
        if reason is None and integration.id not in planned:
            planned.add(integration.id)
            would = "pending" if integration.enabled else "skipped"
        out.append(RouteVerdict(route, integration, reason, would))
    return out
