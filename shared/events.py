"""What an accepted event is, independent of how it arrived: type, kind, severity and lifecycle key.

The API's request schemas turn a request body into an `EventFacts`; routing and rendering read only this.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

SEVERITY_ORDER = {"info": 0, "warning": 1, "error": 2, "critical": 3}

#: The gateway's (PushGo's) severities on the route scale, one step each so both vocabularies stay ordered:
#: low -> info, normal -> warning, high -> error, critical -> critical. A route's `min_severity` may be
#: written in either vocabulary (`severity_at_least` maps both sides).
GATEWAY_SEVERITIES = ("critical", "high", "normal", "low")
GATEWAY_TO_ROUTE_SEVERITY = {"low": "info", "normal": "warning", "high": "error", "critical": "critical"}

RELEASE_TYPES = ("release.created", "release.promoted", "release.rollout_changed")
PIPELINE_TYPES = ("pipeline.trigger", "pipeline.success", "pipeline.failure")
# The gateway's doors (api/routes/gateway.py). A close is `incident.resolved` so PagerDuty's default
# `resolve_on` (`*.resolved`) resolves the alert the trigger opened.
INCIDENT_TYPES = ("incident.created", "incident.updated", "incident.resolved")
THING_TYPES = ("thing.created", "thing.updated", "thing.archived", "thing.deleted")
MESSAGE_TYPES = ("message.sent",)
# Herald's own operational events (issue 12): stored and routed like any event, but only to routes that name
# them (shared/routing.py) and never to the integration they are about (payload `integration_id`).
OPERATIONAL_KIND = "herald"
INTEGRATION_FAILING = "herald.integration.failing"
INTEGRATION_RECOVERED = "herald.integration.recovered"
INTEGRATION_DISABLED = "herald.integration.disabled"
DEADLETTERS_GROWING = "herald.deadletters.growing"
OPERATIONAL_TYPES = (INTEGRATION_FAILING, INTEGRATION_RECOVERED, INTEGRATION_DISABLED, DEADLETTERS_GROWING)


@dataclass(frozen=True)
class EventFacts:
    id: uuid.UUID
    kind: str  # release | pipeline | incident | thing | message | herald (operational)
    type: str
    project: str
    environment: str | None
    severity: str
    payload: dict[str, Any]
    created_at: datetime
    lifecycle_key: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    # Gateway events (kind incident | thing | message) carry their lifecycle in the payload:
    # {"lifecycle": {"kind", "id", "key", "sequence", "event_time", "stale"}, "state": {...}, "dispatch": {...}}
    @property
    def sequence(self) -> int | None:
        """The arrival order of this event within its lifecycle (1 = the root), when the door assigns one."""
        value = (self.payload.get("lifecycle") or {}).get("sequence")
        return value if isinstance(value, int) else None

    @property
    def event_time(self) -> float | None:
        """When the event happened at the source (Unix seconds), which orders states of one lifecycle."""
        value = (self.payload.get("lifecycle") or {}).get("event_time")
        return float(value) if isinstance(value, int | float) else None


def route_severity(severity: str) -> str:
    """A severity of either vocabulary as the route scale (`high` -> `error`); route-scale values unchanged."""
    return GATEWAY_TO_ROUTE_SEVERITY.get(severity, severity)


def severity_at_least(severity: str, minimum: str) -> bool:
    rank = SEVERITY_ORDER.get
    return rank(route_severity(severity), 0) >= rank(route_severity(minimum), 0)


def release_severity(event_type: str, payload: dict[str, Any]) -> str:
    # A mandatory release asks people to act (upgrade), so it stands out from routine ones.
    return "warning" if payload.get("mandatory") else "info"


def pipeline_severity(stage: str) -> str:
    return "error" if stage == "failure" else "info"


def release_lifecycle_key(payload: dict[str, Any]) -> str:
    return f"release:{payload['project']}:{payload['version']}"


def pipeline_lifecycle_key(payload: dict[str, Any]) -> str:
    # trigger -> success|failure of one pipeline run on one image meet on this key
    tag = payload.get("image_tag") or ""
    return f"pipeline:{payload['project']}:{payload['app']}:{payload['pipeline']}:{tag}"


def incident_lifecycle_key(channel_id: str, event_id: str) -> str:
    return f"incident:{channel_id}:{event_id}"


def thing_lifecycle_key(channel_id: str, thing_id: str) -> str:
    return f"thing:{channel_id}:{thing_id}"


def message_lifecycle_key(channel_id: str, message_id: str) -> str:
    # A message is a lifecycle of one: its own key, so it never edits an incident's or a thing's message.
    return f"message:{channel_id}:{message_id}"


#: PushGo severity -> (APNs interruption level, FCM Android priority), as the reference lists them.
PUSH_LEVELS = {
    "critical": ("critical", "HIGH"),
    "high": ("time-sensitive", "HIGH"),
    "normal": ("active", "HIGH"),
    "low": ("passive", "NORMAL"),
}
#: the longest push expiry a gateway message may ask for (`ttl`)
MAX_PUSH_TTL_S = 28 * 24 * 3600


def alert_group_lifecycle_key(project: str, group_hash: str, episode: int) -> str:
    # An Alertmanager/Grafana alert group (api/alertmanager/): one lifecycle per firing episode of the group,
    # so a group that fires again after it resolved gets a new message rather than an edit of the old one.
    return f"alertmanager:{project}:{group_hash}:{episode}"
