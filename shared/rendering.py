"""One normalized message per event, which each provider renders into its own format.

Release, pipeline and incident events each get a title a person can read at a glance, the facts as fields,
and a link back. Providers truncate to their vendor's limits; this module never does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shared.events import OPERATIONAL_KIND, EventFacts


@dataclass(frozen=True)
class RenderedMessage:
    kind: str
    event_type: str
    title: str
    text: str
    severity: str
    fields: list[tuple[str, str]] = field(default_factory=list)
    link: str | None = None
    footer: str | None = None
    # The machine-readable event, for formats that carry data rather than prose (webhooks, PagerDuty).
    data: dict[str, Any] = field(default_factory=dict)
    lifecycle_key: str | None = None
    # Gateway events (incident | thing | message): the lifecycle's arrival sequence, PushGo's opaque E2EE
    # `ciphertext` (carried as is to destinations that can hold it, never decrypted), the push expiry in
    # seconds (capped at 28 days) and PushGo's own severity (for APNs interruption level / FCM priority,
    # shared.events.PUSH_LEVELS).
    sequence: int | None = None
    ciphertext: str | None = None
    ttl_s: int | None = None
    gateway_severity: str | None = None


def _release(event: EventFacts) -> tuple[str, str, list[tuple[str, str]]]:
    p = event.payload
    env = p["environment"]
    what = {
        "release.created": f"{p['project']} {p['version']} released to {env}",
        "release.promoted": f"{p['project']} {p['version']} promoted {p.get('from_environment') or '?'} → {env}",
        "release.rollout_changed": (
            f"{p['project']} {p['version']} rollout in {env}: "
            f"{p.get('previous_rollout_percent', '?')}% → {p.get('rollout_percent', '?')}%"
        ),
    }[event.type]
    fields = [("Project", p["project"]), ("Environment", env), ("Version", p["version"])]
    if p.get("mandatory"):
        fields.append(("Mandatory", "yes"))
    if event.type == "release.promoted" and p.get("from_environment"):
        fields.append(("From", p["from_environment"]))
    if event.type == "release.rollout_changed":
        fields.append(("Rollout", f"{p.get('rollout_percent')}%"))
    return what, p.get("description") or "", fields


def _pipeline(event: EventFacts) -> tuple[str, str, list[tuple[str, str]]]:
    p = event.payload
    stage = p["stage"]
    verb = {"trigger": "triggered", "success": "succeeded", "failure": "FAILED"}[stage]
    kind = "CI" if p["pipeline_type"] == "ci" else "CD"
    title = f"{kind} pipeline {p['pipeline']} for {p['app']} {verb}"
    fields = [("App", p["app"]), ("Project", p["project"])]
    if p.get("environment"):
        fields.append(("Environment", p["environment"]))
    if p.get("cluster"):
        fields.append(("Cluster", p["cluster"]))
    if p.get("triggered_by"):
        fields.append(("Triggered by", p["triggered_by"]))
    if p.get("image_repo") or p.get("image_tag"):
        fields.append(("Image", f"{p.get('image_repo') or ''}:{p.get('image_tag') or ''}".strip(":")))
    return title, "", fields


GATEWAY_KINDS = ("incident", "thing", "message")


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())
    return str(value)


def _gateway(event: EventFacts) -> tuple[str, str, list[tuple[str, str]]]:
    """An incident, thing or message from the gateway: the lifecycle's *current* state (so an edited message
    shows where the lifecycle is now), with this dispatch's message as the text."""
    p = event.payload
    state: dict[str, Any] = p.get("state") or {}
    dispatch: dict[str, Any] = p.get("dispatch") or {}
    fields: list[tuple[str, str]] = []
    if event.kind == "incident":
        title = str(state.get("title") or "Incident")
        status = str(state.get("status") or "")
        if state.get("open") is False:
            title = f"[CLOSED] {title}"
        text = str(dispatch.get("message") or state.get("message") or "")
        fields.append(("Status", status))
        fields.append(("Severity", str(state.get("severity") or "")))
    elif event.kind == "thing":
        title = str(state.get("title") or f"Thing {p.get('thing_id')}")
        lifecycle_state = str(state.get("state") or "active")
        if lifecycle_state != "active":
            title = f"[{lifecycle_state.upper()}] {title}"
        text = str(state.get("description") or "")
        fields.append(("State", lifecycle_state))
        if state.get("location_type"):
            fields.append(("Location", f"{state['location_type']}: {state.get('location_value')}"))
    else:
        title = str(dispatch.get("title") or "Message")
        text = str(dispatch.get("body") or "")
    if event.kind == "incident" and state.get("description"):
        fields.append(("Description", str(state["description"])))
    for key, value in (state.get("attrs") or {}).items():
        fields.append((str(key), _fmt(value)))
    tags = state.get("tags") or dispatch.get("tags") or []
    if tags:
        fields.append(("Tags", ", ".join(str(t) for t in tags)))
    return title, text, fields


#: Alertmanager / Grafana alert groups (api/alertmanager/): the firing alerts shown, then "and N more"
ALERT_SOURCES = ("alertmanager", "grafana")
ALERT_GROUP_SHOWN_MAX = 10


def _alert_group(event: EventFacts) -> tuple[str, str, list[tuple[str, str]], str | None]:
    """An alert group's current state: the firing alerts (labels and summary) up to a limit, and links to
    the first alert's source (generatorURL) and the silence page."""
    p = event.payload
    alerts: list[dict[str, Any]] = p.get("alerts") or []
    firing = [a for a in alerts if a.get("status") == "firing"]
    resolved_count = len(alerts) - len(firing)
    truncated = int(p.get("truncated_alerts") or 0)
    if p.get("status") == "resolved":
        title = f"[RESOLVED] {p.get('title')}"
    else:
        title = f"[FIRING:{len(firing) + truncated}] {p.get('title')}"
    text = f"{len(firing) + truncated} firing, {resolved_count} resolved"
    common = p.get("common_labels") or {}
    fields: list[tuple[str, str]] = []
    for alert in firing[:ALERT_GROUP_SHOWN_MAX]:
        labels: dict[str, str] = alert.get("labels") or {}
        name = labels.get("alertname") or "alert"
        # Labels the whole group shares are said once (the title); each alert shows what tells it apart.
        own = {k: v for k, v in labels.items() if k != "alertname" and common.get(k) != v}
        summary = (alert.get("annotations") or {}).get("summary") or ""
        fields.append((name, " · ".join(x for x in (summary, _fmt(own)) if x) or "firing"))
    more = (
        len(firing) - ALERT_GROUP_SHOWN_MAX + truncated if len(firing) > ALERT_GROUP_SHOWN_MAX else truncated
    )
    if more > 0:
        fields.append(("More", f"and {more} more"))
    if common:
        fields.append(("Labels", _fmt(common)))
    if p.get("silence_url"):
        fields.append(("Silence", str(p["silence_url"])))
    source = next((a.get("generator_url") for a in firing + alerts if a.get("generator_url")), None)
    return title, text, fields, source


def render(event: EventFacts) -> RenderedMessage:
    alert_link: str | None = None
    if event.payload.get("source") in ALERT_SOURCES and event.kind == "incident":
        title, text, fields, alert_link = _alert_group(event)
    elif event.kind == "release":
        title, text, fields = _release(event)
    elif event.kind == "pipeline":
        title, text, fields = _pipeline(event)
    elif event.kind in GATEWAY_KINDS and "lifecycle" in event.payload:
        title, text, fields = _gateway(event)
    elif event.kind == OPERATIONAL_KIND:
        # Herald about itself (workers/opsevents.py): the facts are given as a flat mapping, in order.
        title = str(event.payload.get("title") or event.type)
        text = str(event.payload.get("message") or "")
        fields = [(str(k), _fmt(v)) for k, v in (event.payload.get("facts") or {}).items()]
    else:
        title = str(event.payload.get("title") or event.type)
        text = str(event.payload.get("message") or "")
        fields = []
    if event.payload.get("test") is True:
        # The integration Test button's event (api/routes/integrations.py): never mistaken for a real release.
        title = f"[TEST] {title}"
    data = {
        "event_id": str(event.id),
        "type": event.type,
        "project": event.project,
        "environment": event.environment,
        "severity": event.severity,
        "created_at": event.created_at.isoformat(),
        **{k: v for k, v in event.payload.items() if k not in ("type",)},
    }
    gateway = (
        event.kind in GATEWAY_KINDS
        and "lifecycle" in event.payload
        and event.payload.get("source") not in ALERT_SOURCES
    )
    dispatch = event.payload.get("dispatch") or {}
    return RenderedMessage(
        kind=event.kind,
        event_type=event.type,
        title=title,
        text=text,
        severity=event.severity,
        fields=fields,
        link=alert_link or (dispatch.get("url") if gateway else event.payload.get("url")),
        footer=f"Herald · {event.project}",
        data=data,
        lifecycle_key=event.lifecycle_key,
        sequence=event.sequence,
        ciphertext=event.payload.get("ciphertext") if gateway else None,
        ttl_s=event.payload.get("ttl_s") if gateway else None,
        gateway_severity=dispatch.get("severity") if gateway else None,
    )
