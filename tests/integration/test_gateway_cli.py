"""`herald channels create|list|rotate|delete` and `herald incidents list|show` against a live API."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from tests.integration.test_cli import herald, live_api  # noqa: F401 (the live API fixture)

pytestmark = pytest.mark.integration


def test_channels_and_incidents_from_the_cli(live_api, project):  # noqa: F811
    r = herald(live_api, "channels", "create", "ci", "--project", project, "--json")
    assert r.exit_code == 0, r.output
    created = json.loads(r.output)
    cid, password = created["channel_id"], created["password"]
    assert len(cid) == 32 and password

    r = herald(live_api, "channels", "list", "--project", project)
    assert r.exit_code == 0 and cid in r.output and password not in r.output

    def post(path: str, body: dict) -> dict:
        req = urllib.request.Request(
            live_api + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return dict(json.loads(resp.read()))
        except urllib.error.HTTPError as exc:
            return dict(json.loads(exc.read()))

    creds = {"channel_id": cid, "password": password}
    event = {
        "title": "Disk full",
        "status": "ongoing",
        "message": "/var at 99%",
        "severity": "critical",
        "event_time": 1713750000,
    }
    data = post("/event/create", {**creds, **event})["data"]
    post(
        "/event/update",
        {**creds, **event, "event_id": data["event_id"], "status": "cleaning", "event_time": 1713750100},
    )

    r = herald(live_api, "incidents", "list", "--project", project, "--state", "open")
    assert r.exit_code == 0, r.output
    assert data["event_id"] in r.output and "Disk full" in r.output
    r = herald(live_api, "incidents", "show", data["event_id"])
    assert r.exit_code == 0, r.output
    assert "cleaning" in r.output and "/event/update" in r.output

    r = herald(live_api, "channels", "rotate", cid, "--json")
    assert r.exit_code == 0, r.output
    new = json.loads(r.output)["password"]
    assert new and new != password
    assert post("/message", {**creds, "title": "t"})["error_code"] == "invalid_channel_credentials"
    assert post("/message", {"channel_id": cid, "password": new, "title": "t"})["success"] is True

    r = herald(live_api, "channels", "delete", cid)
    assert r.exit_code == 0, r.output
    r = herald(live_api, "channels", "delete", cid)
    assert r.exit_code != 0 and "not_found" in r.output
