"""One normalized message per event, which each provider renders into its own format.

Release, pipeline and incident events each get a title a person can read at a glance, the facts as fields,
and a link back. Providers truncate to their vendor's limits; this module never does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shared.events import EventFacts


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


def render(event: EventFacts) -> RenderedMessage:
    if event.kind == "release":
        title, text, fields = _release(event)
    elif event.kind == "pipeline":
        title, text, fields = _pipeline(event)
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
    return RenderedMessage(
        kind=event.kind,
        event_type=event.type,
        title=title,
        text=text,
        severity=event.severity,
        fields=fields,
        link=event.payload.get("url"),
        footer=f"Herald · {event.project}",
        data=data,
        lifecycle_key=event.lifecycle_key,
    )
