"""End to end on the shared stack: API -> PostgreSQL -> Redis -> celery worker -> fake receiver."""

from __future__ import annotations

import itertools
import json
from datetime import datetime

import pytest
import standardwebhooks
from sqlalchemy import create_engine, text

from tests.fakes.server import FakeServer, Reply
from tests.fakes.webhook import retry_after
from tests.integration.stack import (
    AUTH,
    Stack,
    create_webhook,
    post_release,
    wait_for_deliveries,
)

pytestmark = pytest.mark.integration

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def attempts_in_db(stack: Stack, delivery_id: str) -> list[tuple[int, str, int | None]]:
    engine = create_engine(stack.env["HERALD_DATABASE_URL"])
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT attempt_no, outcome, status_code FROM attempt WHERE delivery_id = :d ORDER BY attempt_no"
            ),
            {"d": delivery_id},
        ).all()
    engine.dispose()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def test_release_event_delivered_signed_and_verifiable(api, receiver: FakeServer, hook_path, project):
    create_webhook(api, receiver.url(hook_path), project=project, signing_secret=SECRET)
    event_id = post_release(api, project, type="release.promoted", from_environment="staging")

    [request] = receiver.wait_for(hook_path, 1)
    [delivery] = wait_for_deliveries(api, event_id)
    assert delivery["state"] == "delivered"
    assert request.headers["webhook-id"] == delivery["id"]
    # The reference library verifies what we signed, over the exact bytes received.
    verified = standardwebhooks.Webhook(SECRET).verify(request.body, request.headers)
    assert verified["type"] == "release.promoted"
    assert verified["data"]["event_id"] == event_id
    assert verified["data"]["from_environment"] == "staging"
    assert "staging → prod" in verified["message"]["title"]
    assert delivery["attempts"][0]["status_code"] == 200


def test_pipeline_event_delivered(api, receiver: FakeServer, hook_path, project):
    create_webhook(api, receiver.url(hook_path), project=project)
    r = api.post(
        "/v1/events/pipeline",
        headers=AUTH,
        json={
            "app": "checkout",
            "project": project,
            "environment": "prod",
            "cluster": "eu-1",
            "pipeline": "deploy-prod",
            "pipeline_type": "cd",
            "stage": "failure",
            "triggered_by": "ana@example.com",
            "image_repo": "registry.example/checkout",
            "image_tag": "9f2c1e",
            "url": "https://ci.example/p/77",
        },
    )
    assert r.status_code == 202, r.text
    [request] = receiver.wait_for(hook_path, 1)
    body = json.loads(request.body)
    assert body["type"] == "pipeline.failure"
    assert body["data"]["severity"] == "error"
    assert body["data"]["image_tag"] == "9f2c1e"
    assert "webhook-signature" not in request.headers  # no secret configured, nothing signed
    [delivery] = wait_for_deliveries(api, r.json()["data"]["event_id"])
    assert delivery["state"] == "delivered"


def test_routing_by_project_with_catch_all(api, receiver: FakeServer, project):
    ios, android, everything = "/ios/" + project, "/android/" + project, "/all/" + project
    create_webhook(api, receiver.url(ios), project=f"{project}-ios")
    create_webhook(api, receiver.url(android), project=f"{project}-android")
    catch_all = create_webhook(api, receiver.url(everything), catch_all=True)
    try:
        ios_event = post_release(api, f"{project}-ios")
        android_event = post_release(api, f"{project}-android")
        assert len(wait_for_deliveries(api, ios_event, count=2)) == 2
        assert len(wait_for_deliveries(api, android_event, count=2)) == 2
        received_all = {json.loads(r.body)["data"]["event_id"] for r in receiver.wait_for(everything, 2)}
        assert {ios_event, android_event} <= received_all
        assert [json.loads(r.body)["data"]["event_id"] for r in receiver.requests(ios)] == [ios_event]
        assert [json.loads(r.body)["data"]["event_id"] for r in receiver.requests(android)] == [android_event]
    finally:
        assert api.delete(f"/v1/integrations/{catch_all}", headers=AUTH).status_code == 204


def test_500_500_then_200_is_delivered_on_attempt_3(api, stack, receiver: FakeServer, hook_path, project):
    receiver.script(hook_path, Reply(500, b"oops"), Reply(500, b"oops"))
    create_webhook(api, receiver.url(hook_path), project=project)
    event_id = post_release(api, project)
    [delivery] = wait_for_deliveries(api, event_id)
    assert delivery["state"] == "delivered"
    assert delivery["attempt_count"] == 3
    assert attempts_in_db(stack, delivery["id"]) == [
        (1, "retrying", 500),
        (2, "retrying", 500),
        (3, "delivered", 200),
    ]
    requests = receiver.requests(hook_path)
    assert len(requests) == 3
    assert len({r.headers["webhook-id"] for r in requests}) == 1  # stable across retries


def test_429_retry_after_is_honoured(api, receiver: FakeServer, hook_path, project):
    receiver.script(hook_path, retry_after(2))
    create_webhook(api, receiver.url(hook_path), project=project)
    event_id = post_release(api, project)
    first, second = receiver.wait_for(hook_path, 2, timeout_s=15)
    # The scaled schedule would retry after ~0.1 s; the vendor asked for 2 s.
    assert second.arrived_at - first.arrived_at >= 2.0
    [delivery] = wait_for_deliveries(api, event_id)
    assert delivery["state"] == "delivered"
    assert delivery["attempts"][0]["error_class"] == "rate_limited"


def test_400_is_dead_at_once(api, receiver: FakeServer, hook_path, project):
    receiver.script(hook_path, Reply(400, b'{"error":"bad field"}'))
    create_webhook(api, receiver.url(hook_path), project=project)
    event_id = post_release(api, project)
    [delivery] = wait_for_deliveries(api, event_id)
    assert delivery["state"] == "dead"
    assert delivery["dead_reason"] == "invalid_payload"
    assert delivery["attempt_count"] == 1
    assert delivery["attempts"][0]["response_excerpt"] == '{"error":"bad field"}'
    assert len(receiver.requests(hook_path)) == 1


def test_redirect_is_not_followed(api, receiver: FakeServer, hook_path, project):
    receiver.script(hook_path, Reply(302, b"", headers={"Location": receiver.url(hook_path + "/elsewhere")}))
    create_webhook(api, receiver.url(hook_path), project=project)
    [delivery] = wait_for_deliveries(api, post_release(api, project))
    assert delivery["state"] == "dead"
    assert receiver.requests(hook_path + "/elsewhere") == []


def test_always_500_is_dead_after_6_attempts(api, stack, receiver: FakeServer, hook_path, project):
    receiver.script(hook_path, *[Reply(500, b"down")] * 10)
    integration_id = create_webhook(api, receiver.url(hook_path), project=project)
    event_id = post_release(api, project)
    [delivery] = wait_for_deliveries(api, event_id, timeout_s=30)
    assert delivery["state"] == "dead"
    assert delivery["dead_reason"] == "attempts_exhausted"
    assert delivery["attempt_count"] == 6
    assert [a[1] for a in attempts_in_db(stack, delivery["id"])] == ["retrying"] * 5 + ["dead"]
    requests = receiver.requests(hook_path)
    assert len(requests) == 6
    # The waits grow: 0.1, 0.2, 0.4, 0.8, 1.6 s scaled (sweep picks due work up every 0.2 s).
    gaps = [b.arrived_at - a.arrived_at for a, b in itertools.pairwise(requests)]
    assert gaps[-1] > gaps[0]
    assert gaps[-1] >= 1.6 * 0.9
    # Retryable errors do not mark the integration failing.
    assert api.get(f"/v1/integrations/{integration_id}", headers=AUTH).json()["data"]["failing"] is False


def test_auth_failure_marks_integration_failing_and_success_clears_it(
    api, receiver: FakeServer, hook_path, project
):
    receiver.script(hook_path, Reply(401, b"bad token"))
    integration_id = create_webhook(api, receiver.url(hook_path), project=project)
    [delivery] = wait_for_deliveries(api, post_release(api, project))
    assert (delivery["state"], delivery["dead_reason"]) == ("dead", "auth_failed")
    integration = api.get(f"/v1/integrations/{integration_id}", headers=AUTH).json()["data"]
    assert integration["failing"] is True and integration["enabled"] is True
    [delivery] = wait_for_deliveries(api, post_release(api, project, version="1.4.3"))
    assert delivery["state"] == "delivered"
    assert api.get(f"/v1/integrations/{integration_id}", headers=AUTH).json()["data"]["failing"] is False


def test_duplicate_idempotency_key_is_one_event_one_delivery(api, receiver: FakeServer, hook_path, project):
    create_webhook(api, receiver.url(hook_path), project=project)
    headers = {**AUTH, "Idempotency-Key": f"release-{project}"}
    body = {"type": "release.created", "project": project, "environment": "prod", "version": "2.0.0"}
    first = api.post("/v1/events/release", headers=headers, json=body)
    second = api.post("/v1/events/release", headers=headers, json=body)
    assert first.status_code == second.status_code == 202
    assert first.json()["data"]["event_id"] == second.json()["data"]["event_id"]
    assert second.json()["data"]["duplicate"] is True
    # op_id in the body is the same key as the header
    third = api.post("/v1/events/release", headers=AUTH, json={**body, "op_id": f"release-{project}"})
    assert third.json()["data"]["event_id"] == first.json()["data"]["event_id"]
    # the same key with a different event is refused, not silently merged
    conflict = api.post("/v1/events/release", headers=headers, json={**body, "version": "2.0.1"})
    assert conflict.status_code == 409
    assert conflict.json()["error_code"] == "idempotency_conflict"

    assert len(wait_for_deliveries(api, first.json()["data"]["event_id"])) == 1
    receiver.wait_for(hook_path, 1)
    assert len(receiver.requests(hook_path)) == 1


def test_disabled_integration_records_skipped(api, receiver: FakeServer, hook_path, project):
    r = api.post(
        "/v1/integrations",
        headers=AUTH,
        json={
            "name": "paused",
            "provider": "webhook",
            "project": project,
            "enabled": False,
            "config": {"url": receiver.url(hook_path)},
        },
    )
    assert r.status_code == 201
    api.post("/v1/routes", headers=AUTH, json={"integration_id": r.json()["data"]["id"], "project": project})
    [delivery] = wait_for_deliveries(api, post_release(api, project))
    assert delivery["state"] == "skipped"
    assert receiver.requests(hook_path) == []


def test_event_timestamps_are_ordered(api, receiver: FakeServer, hook_path, project):
    create_webhook(api, receiver.url(hook_path), project=project)
    event_id = post_release(api, project)
    [delivery] = wait_for_deliveries(api, event_id)
    event = api.get(f"/v1/events/{event_id}", headers=AUTH).json()["data"]
    created = datetime.fromisoformat(event["created_at"])
    assert created <= datetime.fromisoformat(event["fanned_out_at"])
    assert datetime.fromisoformat(event["fanned_out_at"]) <= datetime.fromisoformat(delivery["delivered_at"])
