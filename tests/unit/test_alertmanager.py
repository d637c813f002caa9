"""Alertmanager notifications as incident events (api/alertmanager/) and their alert-group message."""

from __future__ import annotations

import copy
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from api.alertmanager import mapping
from api.alertmanager.schemas import AlertmanagerIn
from providers.render import slack as render_slack
from shared.events import EventFacts
from shared.rendering import ALERT_GROUP_SHOWN_MAX, render
from tests.fakes.slack import block_problems


def alert(name: str, status: str = "firing", **labels: str) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": name, **labels},
        "annotations": {"summary": f"{name} on {labels.get('instance', '?')}"},
        "startsAt": "2026-12-01T22:00:00.000Z",
        "endsAt": "2026-12-01T22:30:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": f"http://prometheus:9090/graph?g0.expr={name}",
        "fingerprint": uuid.uuid5(uuid.NAMESPACE_DNS, name + str(labels)).hex[:16],
    }


def notification(*alerts: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    firing = any(a["status"] == "firing" for a in alerts)
    return {
        "version": "4",
        "groupKey": '{}:{alertname="DiskFull"}',
        "truncatedAlerts": 0,
        "status": "firing" if firing else "resolved",
        "receiver": "herald",
        "groupLabels": {"alertname": "DiskFull"},
        "commonLabels": {"alertname": "DiskFull", "severity": "critical"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": list(alerts),
        **overrides,
    }


def parsed(body: dict[str, Any]) -> AlertmanagerIn:
    return AlertmanagerIn.model_validate(body)


def facts(body: dict[str, Any], event_type: str = "incident.created") -> EventFacts:
    key = "alertmanager:p:abc:1"
    am = parsed(body)
    return EventFacts(
        id=uuid.uuid4(),
        kind="incident",
        type=event_type,
        project="p",
        environment=None,
        severity=mapping.group_severity(am),
        payload=mapping.payload(am, project="p", lifecycle_key=key, source="alertmanager", received_at=1.0),
        created_at=datetime.now(UTC),
        lifecycle_key=key,
    )


def test_unknown_top_level_field_is_refused_but_grafanas_extras_pass():
    with pytest.raises(ValidationError) as info:
        parsed(notification(alert("DiskFull"), surprise=1))
    assert info.value.errors()[0]["type"] == "extra_forbidden"
    grafana_alert = {
        **alert("DiskFull"),
        "silenceURL": "http://g/s",
        "dashboardURL": "http://g/d",
        "values": {"A": 1},
    }
    body = notification(grafana_alert, orgId=1, state="alerting", title="[FIRING:1] DiskFull", message="m")
    assert parsed(body).orgId == 1


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("critical", "critical"),
        ("page", "critical"),
        ("high", "error"),
        ("error", "error"),
        ("Warning", "warning"),
        ("info", "info"),
        ("low", "info"),
        ("none", "info"),
        ("", "warning"),
        ("whatever", "warning"),
    ],
)
def test_severity_label_mapping(label: str, expected: str):
    assert mapping.alert_severity({"severity": label}) == expected


def test_group_severity_is_the_peak_including_resolved_alerts():
    body = parsed(notification(alert("A", severity="info"), alert("B", "resolved", severity="critical")))
    assert mapping.group_severity(body) == "critical"


def test_a_repeat_has_the_same_key_and_a_change_a_new_one():
    """Alertmanager re-sends a firing alert with a later endsAt every repeat_interval: same state, same key."""
    first = notification(alert("DiskFull", instance="a"))
    repeat = copy.deepcopy(first)
    repeat["alerts"][0]["endsAt"] = "2026-12-01T23:59:00Z"
    joined = notification(alert("DiskFull", instance="a"), alert("DiskFull", instance="b"))
    resolved = notification(alert("DiskFull", "resolved", instance="a"))
    keys = [mapping.op_id(parsed(b)) for b in (first, repeat, joined, resolved)]
    assert keys[0] == keys[1]
    assert len(set(keys[1:])) == 3
    assert all(len(k) <= 128 for k in keys)


def test_title_prefers_the_summary_then_the_alertname():
    assert mapping.title(parsed(notification(alert("DiskFull")))) == "DiskFull"
    body = notification(alert("DiskFull"), commonAnnotations={"summary": "Disks are full"})
    assert mapping.title(parsed(body)) == "Disks are full"


def test_resolved_only_when_every_alert_is():
    assert not mapping.resolved(parsed(notification(alert("A"), alert("B", "resolved"))))
    assert mapping.resolved(parsed(notification(alert("A", "resolved"), alert("B", "resolved"))))


def test_message_lists_firing_alerts_with_labels_summary_and_links():
    msg = render(
        facts(
            notification(alert("DiskFull", instance="db-1"), alert("DiskFull", "resolved", instance="db-2"))
        )
    )
    assert msg.title == "[FIRING:1] DiskFull"
    assert msg.text == "1 firing, 1 resolved"
    fields = dict(msg.fields)
    assert fields["DiskFull"] == "DiskFull on db-1 · instance=db-1"
    assert msg.link == "http://prometheus:9090/graph?g0.expr=DiskFull"
    assert fields["Silence"].startswith("http://alertmanager:9093/#/silences/new?filter=")
    assert "alertname%3D%22DiskFull%22" in fields["Silence"]
    assert msg.lifecycle_key == "alertmanager:p:abc:1"


def test_message_shows_a_limit_then_and_n_more_counting_truncated_alerts():
    many = [alert("DiskFull", instance=f"db-{n}") for n in range(ALERT_GROUP_SHOWN_MAX + 3)]
    msg = render(facts(notification(*many, truncatedAlerts=2)))
    names = [name for name, _ in msg.fields if name == "DiskFull"]
    assert len(names) == ALERT_GROUP_SHOWN_MAX
    assert ("More", "and 5 more") in msg.fields
    assert msg.title == f"[FIRING:{ALERT_GROUP_SHOWN_MAX + 5}] DiskFull"


def test_resolved_group_title():
    msg = render(facts(notification(alert("DiskFull", "resolved")), "incident.resolved"))
    assert msg.title == "[RESOLVED] DiskFull"
    assert msg.text == "0 firing, 1 resolved"
    assert msg.link == "http://prometheus:9090/graph?g0.expr=DiskFull"


def test_a_large_group_renders_within_slacks_block_limits():
    many = [alert("DiskFull", instance=f"db-{n}") for n in range(200)]
    body = render_slack.render(render(facts(notification(*many, truncatedAlerts=50))))
    assert block_problems(body) is None
    assert "and 240 more" in str(body)
