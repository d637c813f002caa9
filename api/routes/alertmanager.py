"""`POST /v1/events/alertmanager`: Alertmanager's (and Grafana's) webhook as incident lifecycles.

Authenticated like every ingest route (Alertmanager's `http_config.authorization` sends the ingest key as a
Bearer token). The project is the key's; an unbound key names it with `?project=`. The first firing
notification of a group opens its lifecycle (`incident.created`), later ones update it, and the one where every
alert resolved closes it (`incident.resolved`). The event row is committed before the 202.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from api.alertmanager import mapping
from api.alertmanager.schemas import AlertmanagerIn
from api.errors import ApiError
from api.ingest import EventStore, accepted_response
from api.routes.events import IngestPrincipal
from api.schemas import Envelope, EventAccepted, Name, error_responses
from shared.events import alert_group_lifecycle_key

router = APIRouter(prefix="/v1/events", tags=["events"])

_EXISTING_SQL = "SELECT id FROM event WHERE project = %(project)s AND idempotency_key = %(key)s"
# The group's newest event, to tell whether this notification opens an episode or updates the open one.
# Alertmanager sends one notification per group per group_interval, so this runs at that rate.
_LATEST_SQL = """
SELECT lifecycle_key, type FROM event
WHERE project = %(project)s AND kind = 'incident' AND lifecycle_key LIKE %(prefix)s
ORDER BY created_at DESC LIMIT 1
"""


@router.post(
    "/alertmanager",
    status_code=202,
    response_model=Envelope[EventAccepted],
    responses=error_responses(400, 401, 403, 409, 413, 415, 422, 503),
)
async def post_alertmanager_event(
    body: AlertmanagerIn,
    request: Request,
    principal: IngestPrincipal,
    project: Annotated[Name | None, Query(description="only for a key not bound to a project")] = None,
) -> Response:
    principal.require("ingest")
    if principal.project is not None:
        if project is not None and project != principal.project:
            principal.require_project(project)
        project = principal.project
    if project is None:
        raise ApiError(
            422, "project_required", "this key is not bound to a project: add ?project=<name> to the URL"
        )
    principal.require_project(project)
    store: EventStore = request.app.state.event_store
    op_id = mapping.op_id(body)
    # A repeat (repeat_interval, or a retry after a lost answer) answers the first acceptance before the
    # lifecycle is looked at: the episode may have moved on since, which would change the payload.
    existing = await store._fetchone(_EXISTING_SQL, {"project": project, "key": op_id})
    if existing is not None:
        return accepted_response(existing[0], op_id, True)
    prefix = mapping.lifecycle_prefix(project, body.groupKey)
    latest = await store._fetchone(_LATEST_SQL, {"project": project, "prefix": _like(prefix) + "%"})
    closing = mapping.resolved(body)
    if latest is None or latest[1] == "incident.resolved":
        if closing:
            # Nothing open to close (Herald never saw it fire): a resolution of its own, in the last episode,
            # so the next firing still opens a new one.
            episode = mapping.episode_of(latest[0]) if latest is not None else 1
        else:
            episode = mapping.episode_of(latest[0]) + 1 if latest is not None else 1
        event_type = "incident.resolved" if closing else "incident.created"
    else:
        episode = mapping.episode_of(latest[0])
        event_type = "incident.resolved" if closing else "incident.updated"
    lifecycle_key = alert_group_lifecycle_key(project, mapping.group_hash(body.groupKey), episode)
    source = "grafana" if body.orgId is not None else "alertmanager"
    payload = mapping.payload(
        body, project=project, lifecycle_key=lifecycle_key, source=source, received_at=time.time()
    )
    try:
        event_id, duplicate = await store.accept(
            kind="incident",
            event_type=event_type,
            payload=payload,
            severity=mapping.group_severity(body),
            lifecycle_key=lifecycle_key,
            op_id=op_id,
        )
    except ApiError as exc:
        # The same state sent twice at once (an HA pair of Alertmanagers): the other request stored it first,
        # with its own arrival time, so the payloads differ; it is still the same notification.
        existing = await store._fetchone(_EXISTING_SQL, {"project": project, "key": op_id})
        if exc.error_code != "idempotency_conflict" or existing is None:
            raise
        return accepted_response(existing[0], op_id, True)
    if not duplicate:
        request.app.state.enqueuer.fanout(str(event_id))
    return accepted_response(event_id, op_id, duplicate)


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
