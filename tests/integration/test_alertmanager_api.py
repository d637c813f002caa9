"""`POST /v1/events/alertmanager` against the real PostgreSQL: lifecycle types, idempotent repeats, episodes,
strictness and the ingest key's project."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.integration.stack import AUTH
from tests.unit.test_alertmanager import alert, notification

pytestmark = pytest.mark.integration

URL = "/v1/events/alertmanager"


def ingest_key(api: TestClient, project: str | None) -> dict[str, str]:
    body: dict[str, Any] = {"name": f"am-{project}", "scopes": ["ingest"]}
    if project is not None:
        body["project"] = project
    r = api.post("/v1/keys", headers=AUTH, json=body)
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['data']['key']}"}


def accepted(api: TestClient, key: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    r = api.post(URL, headers=key, json=body)
    assert r.status_code == 202, r.text
    data: dict[str, Any] = r.json()["data"]
    event = api.get(f"/v1/events/{data['event_id']}", headers=AUTH).json()["data"]
    return {**data, "event": event}


def test_a_group_opens_updates_and_closes_one_lifecycle_and_a_repeat_is_a_duplicate(api, project):
    key = ingest_key(api, project)
    first = accepted(api, key, notification(alert("DiskFull", instance="a")))
    repeat_body = notification(alert("DiskFull", instance="a"))
    repeat_body["alerts"][0]["endsAt"] = "2026-12-01T23:59:59Z"  # what repeat_interval re-sends
    repeat = accepted(api, key, repeat_body)
    joined = accepted(
        api, key, notification(alert("DiskFull", instance="a"), alert("DiskFull", instance="b"))
    )
    closed = accepted(
        api,
        key,
        notification(
            alert("DiskFull", "resolved", instance="a"), alert("DiskFull", "resolved", instance="b")
        ),
    )
    assert (repeat["duplicate"], repeat["event_id"]) == (True, first["event_id"])
    assert [e["event"]["type"] for e in (first, joined, closed)] == [
        "incident.created",
        "incident.updated",
        "incident.resolved",
    ]
    keys = {e["event"]["payload"]["lifecycle"]["key"] for e in (first, joined, closed)}
    assert len(keys) == 1 and next(iter(keys)).startswith(f"alertmanager:{project}:")
    assert first["event"]["severity"] == "critical" and first["event"]["kind"] == "incident"
    assert closed["event"]["payload"]["status"] == "resolved"


def test_a_group_that_fires_again_after_resolving_is_a_new_lifecycle(api, project):
    key = ingest_key(api, project)
    first = accepted(api, key, notification(alert("DiskFull")))
    accepted(api, key, notification(alert("DiskFull", "resolved")))
    again_body = notification(alert("DiskFull"))
    again_body["alerts"][0]["startsAt"] = "2026-12-01T23:00:00Z"
    again = accepted(api, key, again_body)
    assert again["event"]["type"] == "incident.created"
    old, new = (e["event"]["payload"]["lifecycle"]["key"] for e in (first, again))
    assert old.endswith(":1") and new.endswith(":2") and old[:-1] == new[:-1]


def test_strict_body_and_grafana_extras(api, project):
    key = ingest_key(api, project)
    r = api.post(URL, headers=key, json=notification(alert("DiskFull"), surprise=True))
    assert (r.status_code, r.json()["error_code"]) == (422, "unknown_field")
    r = api.post(URL, headers=key, json={**notification(alert("DiskFull")), "alerts": []})
    assert (r.status_code, r.json()["error_code"]) == (422, "invalid_field")
    grafana = notification(
        {**alert("DiskFull"), "silenceURL": "http://grafana/s", "values": {"B": 97.5}, "valueString": "x"},
        orgId=1,
        state="alerting",
        title="[FIRING:1] DiskFull",
        message="**Firing**",
    )
    data = accepted(api, key, grafana)
    assert data["event"]["payload"]["source"] == "grafana"


def test_the_project_is_the_keys(api, project):
    r = api.post(URL, json=notification(alert("DiskFull")))
    assert (r.status_code, r.json()["error_code"]) == (401, "unauthorized")
    bound = ingest_key(api, project)
    r = api.post(f"{URL}?project=other-{project}", headers=bound, json=notification(alert("DiskFull")))
    assert (r.status_code, r.json()["error_code"]) == (403, "forbidden")
    unbound = ingest_key(api, None)
    r = api.post(URL, headers=unbound, json=notification(alert("DiskFull")))
    assert (r.status_code, r.json()["error_code"]) == (422, "project_required")
    r = api.post(f"{URL}?project={project}", headers=unbound, json=notification(alert("DiskFull")))
    assert r.status_code == 202, r.text
    event = api.get(f"/v1/events/{r.json()['data']['event_id']}", headers=AUTH).json()["data"]
    assert event["project"] == project
