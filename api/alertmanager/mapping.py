"""An Alertmanager notification as an incident event: lifecycle key, type, severity, title and payload.

One alert group (`groupKey`) is one incident lifecycle per project. Alertmanager keeps a group's key after it
resolves, so a group that fires again opens a new *episode* (`alertmanager:<project>:<group hash>:<n>`): a new
message, not an edit of the resolved one. The idempotency key is the group's state (which alerts, in which
status, since when), so the notification Alertmanager repeats every `repeat_interval` is a duplicate.
"""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import quote

import orjson

from api.alertmanager.schemas import AlertIn, AlertmanagerIn
from shared.events import SEVERITY_ORDER, alert_group_lifecycle_key

#: the `severity` label's common spellings on the route scale (docs/incidents.md); absent or unknown -> warning
SEVERITY_LABELS = {
    **dict.fromkeys(("critical", "crit", "fatal", "emergency", "disaster", "page", "p1"), "critical"),
    **dict.fromkeys(("high", "error", "err", "major", "p2"), "error"),
    **dict.fromkeys(("warning", "warn", "medium", "average", "minor", "p3"), "warning"),
    **dict.fromkeys(("info", "informational", "notice", "low", "none", "ok", "debug", "p4", "p5"), "info"),
}
DEFAULT_SEVERITY = "warning"


def alert_severity(labels: dict[str, str]) -> str:
    return SEVERITY_LABELS.get(labels.get("severity", "").strip().lower(), DEFAULT_SEVERITY)


def group_severity(body: AlertmanagerIn) -> str:
    """The highest severity of the group's alerts, resolved ones included: the resolution reaches every
    destination the trigger reached (an incident routes on its peak)."""
    # Alertmanager copies the common labels into each alert; a hand-written sender may put them only there.
    shared = {**body.groupLabels, **body.commonLabels}
    return max((alert_severity({**shared, **a.labels}) for a in body.alerts), key=SEVERITY_ORDER.__getitem__)


def group_hash(group_key: str) -> str:
    return hashlib.sha256(group_key.encode()).hexdigest()[:32]


def lifecycle_prefix(project: str, group_key: str) -> str:
    return alert_group_lifecycle_key(project, group_hash(group_key), 0)[:-1]


def episode_of(lifecycle_key: str) -> int:
    return int(lifecycle_key.rsplit(":", 1)[-1])


def op_id(body: AlertmanagerIn) -> str:
    """Same group state -> same key. A firing alert's `endsAt` is left out: Alertmanager moves it forward on
    every re-send while nothing changed."""
    alerts = sorted(
        (_identity(a), a.status, a.startsAt, a.endsAt if a.status == "resolved" else "") for a in body.alerts
    )
    state = orjson.dumps([body.status, body.truncatedAlerts, alerts])
    return f"am:{group_hash(body.groupKey)[:24]}:{hashlib.sha256(state).hexdigest()[:32]}"


def _identity(alert: AlertIn) -> str:
    return (
        alert.fingerprint
        or hashlib.sha256(orjson.dumps(alert.labels, option=orjson.OPT_SORT_KEYS)).hexdigest()
    )


def resolved(body: AlertmanagerIn) -> bool:
    return body.status == "resolved" and all(a.status == "resolved" for a in body.alerts)


def title(body: AlertmanagerIn) -> str:
    first = body.alerts[0]
    return (
        body.commonAnnotations.get("summary")
        or body.commonLabels.get("alertname")
        or body.groupLabels.get("alertname")
        or first.labels.get("alertname")
        or "Alert group"
    )[:256]


def silence_url(body: AlertmanagerIn) -> str | None:
    """Alertmanager's new-silence page, pre-filled with the group's labels."""
    if not body.externalURL:
        return None
    matchers = ",".join(f'{k}="{v}"' for k, v in sorted(body.groupLabels.items()))
    return f"{body.externalURL.rstrip('/')}/#/silences/new?filter={quote('{' + matchers + '}')}"


def payload(
    body: AlertmanagerIn, *, project: str, lifecycle_key: str, source: str, received_at: float
) -> dict[str, Any]:
    alerts = [
        {
            "status": a.status,
            "labels": a.labels,
            "annotations": a.annotations,
            "starts_at": a.startsAt,
            "ends_at": a.endsAt if a.status == "resolved" else None,
            "generator_url": a.generatorURL or None,
            "fingerprint": a.fingerprint or None,
            **({"silence_url": a.silenceURL} if a.silenceURL else {}),
            **({"dashboard_url": a.dashboardURL} if a.dashboardURL else {}),
            **({"panel_url": a.panelURL} if a.panelURL else {}),
        }
        for a in body.alerts
    ]
    return {
        "project": project,
        "source": source,
        "title": title(body),
        "status": "resolved" if resolved(body) else "firing",
        "receiver": body.receiver,
        "group_key": body.groupKey,
        "group_labels": body.groupLabels,
        "common_labels": body.commonLabels,
        "common_annotations": body.commonAnnotations,
        "external_url": body.externalURL or None,
        "silence_url": silence_url(body),
        "truncated_alerts": body.truncatedAlerts,
        "alerts": alerts,
        "lifecycle": {
            "kind": "incident",
            "id": ":".join(lifecycle_key.rsplit(":", 2)[-2:]),  # <group hash>:<episode>
            "key": lifecycle_key,
            # When Herald received it: Alertmanager sends a group's notifications one at a time, in order, so
            # arrival orders them. The alerts' own times do not: once a resolved alert has been notified,
            # Alertmanager drops it from the group and the next notification's newest time goes backwards.
            "event_time": received_at,
        },
        **({"message": body.message} if body.message else {}),
    }
