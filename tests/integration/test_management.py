"""The management API on the running stack: integrations (update, enable/disable, Test button, Recent
deliveries, re-saving credentials drains dead letters) and API keys (scopes, hashing, revocation)."""

from __future__ import annotations

import json
import time
import uuid
from urllib.parse import urlsplit

import pytest
from sqlalchemy import create_engine, text

from tests.fakes.server import FakeServer, Reply
from tests.integration.stack import ADMIN_KEY, AUTH, Stack, create_webhook, post_release, wait_for_deliveries

pytestmark = pytest.mark.integration

SECRET_PATH_TOKEN = "tok-" + uuid.uuid4().hex
HEADER_SECRET = "Bearer hdr-" + uuid.uuid4().hex


def error_of(response) -> tuple[int, str]:
    body = response.json()
    assert body["success"] is False and body["data"] is None and body["error"], body
    return response.status_code, body["error_code"]


def sql(stack: Stack, query: str, **params):
    engine = create_engine(stack.env["HERALD_DATABASE_URL"])
    try:
        with engine.begin() as conn:
            result = conn.execute(text(query), params)
            return result.all() if result.returns_rows else None
    finally:
        engine.dispose()


def wait_delivery(api, delivery_id: str, states=("delivered", "dead"), timeout_s: float = 20) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        r = api.get(f"/v1/deliveries/{delivery_id}", headers=AUTH)
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        if data["state"] in states or time.monotonic() > deadline:
            assert data["state"] in states, data
            return data
        time.sleep(0.05)


def new_webhook(api, url: str, **extra) -> dict:
    r = api.post(
        "/v1/integrations",
        headers=AUTH,
        json={"name": f"hook-{uuid.uuid4().hex[:6]}", "provider": "webhook", "config": {"url": url}, **extra},
    )
    assert r.status_code == 201, r.text
    return r.json()["data"]


# integrations


def test_update_keeps_masked_secrets_and_names_the_bad_field(api, receiver: FakeServer, hook_path):
    url = receiver.url(hook_path) + f"?token={SECRET_PATH_TOKEN}"
    created = new_webhook(api, url, project="p1")
    r = api.patch(
        f"/v1/integrations/{created['id']}",
        headers=AUTH,
        json={"config": {"headers": {"Authorization": HEADER_SECRET}}},
    )
    assert r.status_code == 200, r.text
    shown = r.json()["data"]
    assert shown["config"]["url"] == f"http://127.0.0.1:{urlsplit(url).port}/********"
    assert shown["config"]["headers"] == {"Authorization": "********"}
    assert SECRET_PATH_TOKEN not in r.text and HEADER_SECRET not in r.text
    assert shown["redriven"] == 0  # the new header is a secret change, but there was nothing dead

    # A UI sends back exactly what it was shown, changing only the name: every secret keeps its value.
    r = api.put(
        f"/v1/integrations/{created['id']}",
        headers=AUTH,
        json={
            "name": "renamed",
            "provider": "webhook",
            "project": "p1",
            "config": {**shown["config"], "timeout_s": 5},
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["data"]["name"] == "renamed" and r.json()["data"]["config"]["timeout_s"] == 5

    sent = api.post(f"/v1/integrations/{created['id']}/test", headers=AUTH).json()["data"]
    [request] = receiver.wait_for(hook_path, 1, timeout_s=10)
    assert request.query == f"token={SECRET_PATH_TOKEN}"
    assert request.headers["authorization"] == HEADER_SECRET
    assert wait_delivery(api, sent["delivery_id"])["state"] == "delivered"

    # Bad input names the field, never echoes the value.
    r = api.patch(f"/v1/integrations/{created['id']}", headers=AUTH, json={"config": {"url": "ftp://nope"}})
    assert error_of(r) == (422, "invalid_config") and r.json()["error"].startswith("config.url:")
    assert "nope" not in r.text
    r = api.put(
        f"/v1/integrations/{created['id']}",
        headers=AUTH,
        json={"name": "x", "provider": "slack", "config": {"webhook_url": "https://hooks.slack.com/x"}},
    )
    assert error_of(r) == (422, "provider_immutable")
    assert error_of(api.patch(f"/v1/integrations/{created['id']}", headers=AUTH, json={"enabled": None})) == (
        422,
        "invalid_field",
    )
    assert error_of(api.patch(f"/v1/integrations/{uuid.uuid4()}", headers=AUTH, json={"name": "x"})) == (
        404,
        "not_found",
    )


def test_several_integrations_per_provider_and_list_filters(api, receiver: FakeServer):
    project = f"multi-{uuid.uuid4().hex[:6]}"
    ids = {new_webhook(api, receiver.url(f"/m/{i}"), project=project)["id"] for i in range(3)}
    r = api.get("/v1/integrations", headers=AUTH, params={"project": project, "provider": "webhook"})
    assert {i["id"] for i in r.json()["data"]} == ids
    api.patch(f"/v1/integrations/{sorted(ids)[0]}", headers=AUTH, json={"enabled": False})
    r = api.get("/v1/integrations", headers=AUTH, params={"project": project, "enabled": "false"})
    assert [i["id"] for i in r.json()["data"]] == [sorted(ids)[0]]


def test_test_button_reaches_the_destination_within_2_s(api, receiver: FakeServer, hook_path, project):
    integration = new_webhook(api, receiver.url(hook_path), project=project)
    before = time.time()
    r = api.post(f"/v1/integrations/{integration['id']}/test", headers=AUTH)
    assert r.status_code == 202, r.text
    sent = r.json()["data"]
    [request] = receiver.wait_for(hook_path, 1, timeout_s=10)
    latency_s = request.arrived_at - before
    print(f"test button: POST -> destination in {latency_s * 1000:.0f} ms")
    # The seed's promise (~2 s) with a healthy worker; the typical figure is far below (see the print).
    assert latency_s < 2.0
    body = json.loads(request.body)
    assert body["message"]["title"].startswith("[TEST] ")
    assert body["data"]["project"] == project and body["data"]["version"]
    assert request.headers["webhook-id"] == sent["delivery_id"]
    delivery = wait_delivery(api, sent["delivery_id"])
    assert delivery["state"] == "delivered" and delivery["attempts"][0]["status_code"] == 200
    assert delivery["event_type"] == "release.created"


def test_test_button_goes_to_that_integration_only(api, receiver: FakeServer, project):
    catch_all = create_webhook(api, receiver.url(f"/all/{project}"), catch_all=True)
    try:
        target = new_webhook(api, receiver.url(f"/one/{project}"))
        api.post(f"/v1/integrations/{target['id']}/test", headers=AUTH)
        receiver.wait_for(f"/one/{project}", 1, timeout_s=10)
        time.sleep(1.5)  # past a fan-out grace period and several sweeps: nothing may reach the catch-all
        assert receiver.requests(f"/all/{project}") == []
    finally:
        api.delete(f"/v1/integrations/{catch_all}", headers=AUTH)


def test_recent_deliveries_newest_first_paginated_with_attempts(
    api, receiver: FakeServer, hook_path, project
):
    receiver.script(hook_path, Reply(500, b"upstream down"), Reply(200, b"{}"))
    integration_id = create_webhook(api, receiver.url(hook_path), project=project)
    events = []
    for version in ("1.0.0", "1.0.1", "1.0.2"):
        events.append(post_release(api, project, version=version))
        wait_for_deliveries(api, events[-1])
    receiver.script(hook_path, Reply(400, b'{"error":"bad"}'))
    events.append(post_release(api, project, version="1.0.3"))
    [dead] = wait_for_deliveries(api, events[-1])
    assert dead["state"] == "dead"

    url = f"/v1/integrations/{integration_id}/deliveries"
    page1 = api.get(url, headers=AUTH, params={"limit": 3}).json()["data"]
    assert [d["event_id"] for d in page1["items"]] == events[::-1][:3]
    assert page1["next_cursor"]
    page2 = api.get(url, headers=AUTH, params={"limit": 3, "cursor": page1["next_cursor"]}).json()["data"]
    assert [d["event_id"] for d in page2["items"]] == [events[0]] and page2["next_cursor"] is None
    first = page2["items"][0]
    assert [(a["attempt_no"], a["outcome"], a["status_code"]) for a in first["attempts"]] == [
        (1, "retrying", 500),
        (2, "delivered", 200),
    ]
    assert first["attempts"][0]["response_excerpt"] == "upstream down"
    dead_only = api.get(url, headers=AUTH, params={"state": "dead"}).json()["data"]["items"]
    assert [d["event_id"] for d in dead_only] == [events[-1]]
    assert dead_only[0]["attempts"][0]["error_class"] == "invalid_payload"

    assert error_of(api.get(url, headers=AUTH, params={"cursor": "garbage"})) == (422, "invalid_cursor")
    assert error_of(api.get(url, headers=AUTH, params={"state": "lost"}))[0] == 422
    assert error_of(api.get(f"/v1/integrations/{uuid.uuid4()}/deliveries", headers=AUTH)) == (
        404,
        "not_found",
    )


def test_resaving_the_config_drains_the_dead_letters(api, receiver: FakeServer, project):
    """Repro (issue 16): re-saving an integration with unchanged (masked) credentials redrove nothing, although
    seed 001 says re-saving drains its dead letters; only a changed secret did."""
    path = f"/old/{project}"
    receiver.script(path, *[Reply(401, b"revoked")] * 2)
    integration_id = create_webhook(api, receiver.url(path), project=project)
    dead = [wait_for_deliveries(api, post_release(api, project, version=v))[0] for v in ("2.0", "2.1")]
    assert {d["state"] for d in dead} == {"dead"}
    shown = api.get(f"/v1/integrations/{integration_id}", headers=AUTH).json()["data"]
    assert shown["failing"] is True and shown["enabled"] is True  # seed 001: stays enabled, flagged
    # Interface 3: the outcomes beside the flag, and the cause on each dead letter.
    assert shown["recent_outcomes"] == {"window_s": 86400, "delivered": 0, "retrying": 0, "dead": 2}
    letters = api.get("/v1/dead-letters", headers=AUTH, params={"integration_id": integration_id}).json()
    for letter in letters["data"]["items"]:
        assert letter["next_attempt_at"] is None and letter["last_error_class"] == "auth_failed"

    # Re-saving the same (masked) config: the credentials were fixed at the vendor's end; try again.
    r = api.patch(f"/v1/integrations/{integration_id}", headers=AUTH, json={"config": shown["config"]})
    assert r.status_code == 200, r.text
    assert r.json()["data"]["redriven"] == 2
    # The second one waits behind the circuit's probe: probe sent, recorded, circuit closed, backlog released,
    # swept, claimed, sent. On a loaded 2-core CI machine that chain once took more than 10 s.
    assert len(receiver.wait_for(path, 4, timeout_s=30)) == 4
    for d in dead:
        again = wait_delivery(api, d["id"])
        assert again["state"] == "delivered"
        # A fresh budget: the new attempt is number 1 again; the failed one is kept, one redrive ago.
        assert [(a["attempt_no"], a["redrives_ago"], a["outcome"]) for a in again["attempts"]] == [
            (1, 0, "delivered"),
            (1, 1, "dead"),
        ]
    after = api.get(f"/v1/integrations/{integration_id}", headers=AUTH).json()["data"]
    assert after["failing"] is False
    assert after["recent_outcomes"] == {"window_s": 86400, "delivered": 2, "retrying": 0, "dead": 0}
    # A save that does not touch the config (a rename) redrives nothing.
    r = api.patch(f"/v1/integrations/{integration_id}", headers=AUTH, json={"name": "renamed"})
    assert r.json()["data"]["redriven"] == 0


def test_moving_a_destination_requires_the_secrets_again(api, receiver: FakeServer, hook_path):
    """Repro (issue 10): an admin who cannot read the stored secrets could PATCH the URL to a host of their
    own, keep the masked headers and signing secret, and receive them with the next delivery."""
    url = receiver.url(hook_path)
    created = new_webhook(api, url, project="p1")
    r = api.patch(
        f"/v1/integrations/{created['id']}",
        headers=AUTH,
        json={"config": {"headers": {"Authorization": HEADER_SECRET}}},
    )
    assert r.status_code == 200, r.text
    shown = r.json()["data"]["config"]
    elsewhere = url.replace("127.0.0.1", "localhost")
    for body in (
        {"config": {"url": elsewhere}},  # the secret header omitted
        {"config": {**shown, "url": elsewhere}},  # sent back masked
    ):
        r = api.patch(f"/v1/integrations/{created['id']}", headers=AUTH, json=body)
        assert error_of(r) == (422, "secret_required")
        assert (
            r.json()["error"].startswith("config.url:")
            and "config.headers.Authorization" in r.json()["error"]
        )
        assert HEADER_SECRET not in r.text
    # Same host, another path: the same party receives them; allowed.
    r = api.patch(f"/v1/integrations/{created['id']}", headers=AUTH, json={"config": {"url": url + "/v2"}})
    assert r.status_code == 200, r.text
    # With the secret given again, the move is the admin's informed choice.
    r = api.patch(
        f"/v1/integrations/{created['id']}",
        headers=AUTH,
        json={"config": {"url": elsewhere, "headers": {"Authorization": HEADER_SECRET}}},
    )
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("provider", "config", "move"),
    [
        (
            "slack_bot",
            {"token": "xoxb-1-" + uuid.uuid4().hex, "channel": "#deploys"},
            {"api_base_url": "https://slack.evil.example/api"},
        ),
        (
            "smtp",
            {
                "host": "smtp.example.com",
                "username": "u",
                "password": "pw-" + uuid.uuid4().hex,
                "from_address": "herald@example.com",
                "to": ["ops@example.com"],
            },
            {"host": "smtp.evil.example"},
        ),
    ],
)
def test_the_rule_holds_for_every_provider_with_a_destination(api, provider, config, move):
    r = api.post(
        "/v1/integrations", headers=AUTH, json={"name": provider, "provider": provider, "config": config}
    )
    assert r.status_code == 201, r.text
    r = api.patch(f"/v1/integrations/{r.json()['data']['id']}", headers=AUTH, json={"config": move})
    assert error_of(r) == (422, "secret_required")
    assert r.json()["error"].startswith(f"config.{next(iter(move))}:")


def test_disabled_integration_records_skipped_and_replays_after_enable(
    api, receiver: FakeServer, hook_path, project
):
    integration_id = create_webhook(api, receiver.url(hook_path), project=project)
    api.patch(f"/v1/integrations/{integration_id}", headers=AUTH, json={"enabled": False})
    [skipped] = wait_for_deliveries(api, post_release(api, project))
    assert skipped["state"] == "skipped"
    select = {"ids": [skipped["id"]], "states": ["skipped"]}
    r = api.post("/v1/dead-letters/redrive", headers=AUTH, json=select)
    assert r.json()["data"] == {
        "action": "redrive",
        "matched": 1,
        "processed": 0,
        "state": "done",
        "job_id": None,
    }
    api.patch(f"/v1/integrations/{integration_id}", headers=AUTH, json={"enabled": True})
    assert api.post("/v1/dead-letters/redrive", headers=AUTH, json=select).json()["data"]["processed"] == 1
    receiver.wait_for(hook_path, 1, timeout_s=10)
    assert wait_delivery(api, skipped["id"])["state"] == "delivered"


# API keys


def test_keys_scopes_hashing_and_revocation(api, stack: Stack, project):
    r = api.post("/v1/keys", headers=AUTH, json={"name": "grafana", "scopes": ["read"]})
    assert r.status_code == 201, r.text
    read = r.json()["data"]
    raw = read["key"]
    assert raw.startswith("hk_") and read["prefix"] == raw[:10]
    stored = sql(stack, "SELECT key_hash, key_prefix FROM api_key WHERE id = :id", id=read["id"])
    assert stored[0][0] != raw and raw not in str(stored) and len(stored[0][0]) == 64
    listed = api.get("/v1/keys", headers=AUTH).json()["data"]
    assert read["id"] in {k["id"] for k in listed} and raw not in json.dumps(listed)

    as_reader = {"Authorization": f"Bearer {raw}"}
    assert api.get("/v1/integrations", headers=as_reader).status_code == 200
    assert api.get("/v1/dead-letters", headers=as_reader).status_code == 200
    assert error_of(api.post("/v1/keys", headers=as_reader, json={"name": "x", "scopes": ["admin"]})) == (
        403,
        "forbidden",
    )
    assert error_of(api.post("/v1/events/release", headers=as_reader, json={}))[0] in (403, 422)
    assert error_of(api.get("/v1/integrations")) == (401, "unauthorized")
    assert error_of(api.get("/v1/integrations", headers={"Authorization": "Bearer hk_wrong"})) == (
        401,
        "unauthorized",
    )

    ingest = api.post(
        "/v1/keys", headers=AUTH, json={"name": "ci", "scopes": ["ingest"], "project": project}
    ).json()["data"]
    as_ci = {"Authorization": f"Bearer {ingest['key']}"}
    body = {"type": "release.created", "project": project, "environment": "prod", "version": "1"}
    assert api.post("/v1/events/release", headers=as_ci, json=body).status_code == 202
    assert error_of(api.post("/v1/events/release", headers=as_ci, json={**body, "project": "other"})) == (
        403,
        "forbidden",
    )
    assert error_of(api.get("/v1/integrations", headers=as_ci)) == (403, "forbidden")

    assert api.delete(f"/v1/keys/{read['id']}", headers=AUTH).status_code == 204
    assert error_of(api.get("/v1/integrations", headers=as_reader)) == (401, "unauthorized")
    assert api.delete(f"/v1/keys/{read['id']}", headers=AUTH).status_code == 204  # idempotent
    assert read["id"] not in {k["id"] for k in api.get("/v1/keys", headers=AUTH).json()["data"]}
    assert error_of(api.delete(f"/v1/keys/{uuid.uuid4()}", headers=AUTH)) == (404, "not_found")

    for bad in (
        {"name": "x", "scopes": ["root"]},
        {"name": "x", "scopes": []},
        {"name": "x", "scopes": ["admin"], "project": project},
        {"name": "x", "scopes": ["read"], "colour": "red"},
    ):
        assert error_of(api.post("/v1/keys", headers=AUTH, json=bad))[0] == 422, bad
    assert ADMIN_KEY not in json.dumps(api.get("/v1/keys", headers=AUTH).json())
