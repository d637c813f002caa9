"""Gateway events through the real pipeline (API -> PostgreSQL -> Redis -> celery worker -> fake receiver):
an incident's dispatches reach a webhook with the lifecycle id, sequence and full current state; a route's
min_severity in either vocabulary; ciphertext passes through untouched."""

from __future__ import annotations

import orjson
import pytest
from sqlalchemy import create_engine, text

from tests.fakes.server import FakeServer
from tests.integration.stack import AUTH, wait_until
from tests.integration.test_gateway import event_body, make_channel, ok, update_body

pytestmark = pytest.mark.integration


def webhook_route(api, url: str, project: str, **route: object) -> str:
    r = api.post(
        "/v1/integrations",
        headers=AUTH,
        json={"name": "gw-hook", "provider": "webhook", "project": project, "config": {"url": url}},
    )
    assert r.status_code == 201, r.text
    integration_id: str = r.json()["data"]["id"]
    r = api.post(
        "/v1/routes", headers=AUTH, json={"integration_id": integration_id, "project": project, **route}
    )
    assert r.status_code == 201, r.text
    return integration_id


def test_incident_lifecycle_reaches_a_webhook_with_sequence_and_state(
    api, receiver: FakeServer, hook_path, project
):
    webhook_route(api, receiver.url(hook_path), project, event_types=["incident"])
    channel = make_channel(api, project, password="s3cret-pass")
    creds = {"channel_id": channel["channel_id"], "password": "s3cret-pass"}
    event_id = ok(api.post("/event/create", json=event_body(creds, ciphertext="opaque-E2EE-blob")))[
        "event_id"
    ]
    receiver.wait_for(hook_path, 1)
    ok(api.post("/event/close", json=update_body(creds, event_id, status="resolved", event_time=1713750500)))
    # Generous: on a shared 2-core machine under load a delivery has taken over 20 s.
    requests = receiver.wait_for(hook_path, 2, timeout_s=60)
    assert len(requests) == 2, f"{len(requests)} of 2 dispatches delivered within 60 s"
    bodies = sorted(
        (orjson.loads(r.body) for r in requests), key=lambda b: b["data"]["lifecycle"]["sequence"]
    )
    created, closed = bodies
    assert created["type"] == "incident.created" and closed["type"] == "incident.resolved"
    for body in bodies:
        lifecycle = body["data"]["lifecycle"]
        assert (
            lifecycle["id"] == event_id and lifecycle["key"] == f"incident:{creds['channel_id']}:{event_id}"
        )
        assert body["data"]["incident_id"] == event_id
        assert "s3cret-pass" not in orjson.dumps(body).decode()
    assert [b["data"]["lifecycle"]["sequence"] for b in bodies] == [1, 2]
    assert created["data"]["ciphertext"] == "opaque-E2EE-blob"
    assert closed["data"]["state"]["open"] is False and closed["data"]["state"]["status"] == "resolved"
    assert closed["message"]["title"] == "[CLOSED] Database lag"
    assert created["message"]["severity"] == "error"  # high on the route scale
    detail = api.get(f"/v1/incidents/{event_id}", headers=AUTH).json()["data"]
    assert [len(d["deliveries"]) for d in detail["dispatches"]] == [1, 1]


def test_route_min_severity_accepts_the_gateway_vocabulary(
    api, stack, receiver: FakeServer, hook_path, project
):
    """The route scale's `error` (= PushGo `high`) lets `critical` through and keeps `normal` out: the
    normal message is fanned out to nothing (waited on its fanned_out_at, not slept)."""
    webhook_route(api, receiver.url(hook_path), project, min_severity="error")
    channel = make_channel(api, project, password="s3cret-pass")
    creds = {"channel_id": channel["channel_id"], "password": "s3cret-pass"}
    normal = ok(api.post("/message", json={**creds, "title": "sev normal", "severity": "normal"}))
    ok(api.post("/message", json={**creds, "title": "sev critical", "severity": "critical"}))
    [request] = receiver.wait_for(hook_path, 1, timeout_s=60)
    assert orjson.loads(request.body)["message"]["title"] == "sev critical"
    engine = create_engine(stack.env["HERALD_DATABASE_URL"])
    key = f"gw:{creds['channel_id']}:{normal['op_id']}"

    def fanned_out() -> bool:
        with engine.connect() as conn:
            return conn.execute(
                text("SELECT fanned_out_at IS NOT NULL FROM event WHERE idempotency_key = :k"), {"k": key}
            ).scalar_one()

    wait_until(fanned_out, 60, "the normal message was never fanned out")
    with engine.connect() as conn:
        count = conn.execute(
            text(
                "SELECT count(*) FROM delivery d JOIN event e ON e.id = d.event_id WHERE e.idempotency_key = :k"
            ),
            {"k": key},
        ).scalar_one()
    engine.dispose()
    assert count == 0
