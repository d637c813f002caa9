"""Routes: event-type patterns, minimum severity, pipeline app/cluster/pipeline filters (empty = all current
and future) through the real worker, and the dry run `POST /v1/routes/explain` (nothing stored or sent)."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from tests.fakes.server import FakeServer
from tests.integration.stack import AUTH, Stack, wait_for_deliveries
from tests.integration.test_management import error_of, new_webhook, sql

pytestmark = pytest.mark.integration


def pipeline_event(project: str, **overrides) -> dict:
    return {
        "app": "checkout",
        "project": project,
        "environment": "prod",
        "cluster": "eu-1",
        "pipeline": "deploy-prod",
        "pipeline_type": "cd",
        "stage": "failure",
        "image_tag": "9f2c1e",
        **overrides,
    }


def route(api, integration_id: str, **fields) -> dict:
    r = api.post("/v1/routes", headers=AUTH, json={"integration_id": integration_id, **fields})
    assert r.status_code == 201, r.text
    return r.json()["data"]


def test_route_crud_and_validation(api, receiver: FakeServer, project):
    hook = new_webhook(api, receiver.url("/crud"), project=project)
    created = route(
        api,
        hook["id"],
        project=project,
        event_types=["pipeline.success|failure", "release.*"],
        apps=["checkout"],
        min_severity="warning",
    )
    assert created["clusters"] == [] and created["apps"] == ["checkout"]
    assert api.get(f"/v1/routes/{created['id']}", headers=AUTH).json()["data"] == created
    r = api.put(
        f"/v1/routes/{created['id']}",
        headers=AUTH,
        json={"integration_id": hook["id"], "project": project, "clusters": ["eu-1"]},
    )
    assert (
        r.status_code == 200 and r.json()["data"]["clusters"] == ["eu-1"] and r.json()["data"]["apps"] == []
    )
    listed = api.get("/v1/routes", headers=AUTH, params={"integration_id": hook["id"]}).json()["data"]
    assert [x["id"] for x in listed] == [created["id"]]

    for fields, code in [
        ({"event_types": ["release.deleted"]}, "invalid_field"),
        ({"event_types": ["deploy.*"]}, "invalid_field"),
        ({"event_types": ["pipeline.succes|failure"]}, "invalid_field"),
        ({"min_severity": "fatal"}, "invalid_field"),
        ({"apps": [""]}, "invalid_field"),
        ({"project": "another"}, "project_mismatch"),
    ]:
        body = {"integration_id": hook["id"], "project": project, **fields}
        assert error_of(api.post("/v1/routes", headers=AUTH, json=body)) == (422, code), fields
    assert error_of(api.post("/v1/routes", headers=AUTH, json={"integration_id": str(uuid.uuid4())})) == (
        422,
        "unknown_integration",
    )

    assert api.delete(f"/v1/routes/{created['id']}", headers=AUTH).status_code == 204
    assert error_of(api.get(f"/v1/routes/{created['id']}", headers=AUTH)) == (404, "not_found")


def test_pipeline_filters_through_the_worker(api, receiver: FakeServer, project):
    """Seed 003: a route for app `checkout` failures on any cluster and any pipeline, present or future."""
    path = f"/pipes/{project}"
    hook = new_webhook(api, receiver.url(path), project=project)
    route(api, hook["id"], project=project, event_types=["pipeline.failure"], apps=["checkout"])
    posted = {}
    for name, overrides in {
        "match": {},
        "future_pipeline": {"pipeline": "created-tomorrow", "cluster": "new-cluster"},
        "other_app": {"app": "cart"},
        "success": {"stage": "success"},
    }.items():
        r = api.post("/v1/events/pipeline", headers=AUTH, json=pipeline_event(project, **overrides))
        assert r.status_code == 202, r.text
        posted[name] = r.json()["data"]["event_id"]
    wait_for_deliveries(api, posted["match"])
    wait_for_deliveries(api, posted["future_pipeline"])
    received = {json.loads(r.body)["data"]["event_id"] for r in receiver.wait_for(path, 2, timeout_s=10)}
    time.sleep(0.5)
    assert received == {posted["match"], posted["future_pipeline"]}
    for name in ("other_app", "success"):
        assert api.get(f"/v1/events/{posted[name]}", headers=AUTH).json()["data"]["deliveries"] == []


def test_explain_every_route_with_reason_or_preview_and_nothing_sent(api, stack: Stack, receiver: FakeServer):
    project = f"explain-{uuid.uuid4().hex[:6]}"
    secret_url = receiver.url(f"/explain/{project}") + "?token=explain-s3cret"
    hook = new_webhook(api, secret_url, project=project)
    off = new_webhook(api, receiver.url(f"/off/{project}"), project=project, enabled=False)
    matched = route(api, hook["id"], project=project, event_types=["pipeline.failure"], apps=["checkout"])
    also = route(api, hook["id"], project=project)  # a second route to the same integration
    wrong_cluster = route(api, hook["id"], project=project, clusters=["us-1"])
    too_low = route(api, hook["id"], project=project, min_severity="critical")
    disabled = route(api, off["id"], project=project)
    events_before = sql(stack, "SELECT count(*) FROM event")[0][0]

    r = api.post(
        "/v1/routes/explain", headers=AUTH, json={"kind": "pipeline", "event": pipeline_event(project)}
    )
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert (data["event_type"], data["severity"], data["project"]) == ("pipeline.failure", "error", project)
    mine = {x["route_id"]: x for x in data["routes"] if x["integration_id"] in (hook["id"], off["id"])}
    assert mine[matched["id"]]["matched"] and mine[matched["id"]]["would_deliver"] == "pending"
    preview = mine[matched["id"]]["preview"]
    assert preview["type"] == "pipeline.failure" and "FAILED" in preview["message"]["title"]
    assert mine[also["id"]]["matched"] and mine[also["id"]]["would_deliver"] is None  # deduplicated
    assert mine[wrong_cluster["id"]]["reason"] == "cluster 'eu-1' not in ['us-1']"
    assert mine[wrong_cluster["id"]]["preview"] is None
    assert mine[too_low["id"]]["reason"] == "severity 'error' below 'critical'"
    assert mine[disabled["id"]]["would_deliver"] == "skipped"
    assert hook["id"] in data["integrations"] and off["id"] in data["integrations"]
    assert "explain-s3cret" not in r.text

    # Catch-all routes of other tests see this project too; their reasons are still given, never empty.
    assert all(x["matched"] or x["reason"] for x in data["routes"])
    assert sql(stack, "SELECT count(*) FROM event")[0][0] == events_before
    time.sleep(0.5)
    assert receiver.requests(f"/explain/{project}") == [] and receiver.requests(f"/off/{project}") == []

    r = api.post(
        "/v1/routes/explain",
        headers=AUTH,
        json={
            "kind": "release",
            "event": {"type": "release.created", "project": project, "environment": "prod", "version": "1"},
        },
    )
    release_view = {x["route_id"]: x for x in r.json()["data"]["routes"]}
    assert release_view[matched["id"]]["reason"] == "event type 'release.created' not in ['pipeline.failure']"
    assert release_view[wrong_cluster["id"]]["matched"]  # cluster filters say nothing about releases

    bad = api.post("/v1/routes/explain", headers=AUTH, json={"kind": "pipeline", "event": {"app": "x"}})
    assert error_of(bad) == (422, "invalid_event") and bad.json()["error"].startswith("event.")
    assert (
        error_of(api.post("/v1/routes/explain", headers=AUTH, json={"kind": "deploy", "event": {}}))[0] == 422
    )


@pytest.mark.parametrize(("given", "stored"), [("low", "info"), ("normal", "warning"), ("high", "error")])
def test_min_severity_accepts_the_gateway_vocabulary(api, receiver: FakeServer, project, given, stored):
    """Before: `{"min_severity": "high"}` (PushGo's scale) was a 422 although gateway incidents carry it."""
    hook = new_webhook(api, receiver.url("/sev"), project=project)
    assert route(api, hook["id"], project=project, min_severity=given)["min_severity"] == stored
