"""The JSON listings added with the console (`GET /v1/events`, `GET /v1/deliveries`), the dead-letter
`provider` filter and key rotation, on the real stack: filters, keyset pages that visit every row once, and
bad input answered with a machine-readable error_code."""

from __future__ import annotations

import pytest

from tests.fakes.server import FakeServer, Reply
from tests.integration.stack import AUTH, create_webhook, post_release, wait_for_deliveries
from tests.integration.test_management import error_of

pytestmark = pytest.mark.integration


def _pages(api, path: str, **params) -> list[list[dict]]:
    pages, cursor = [], None
    while True:
        r = api.get(path, headers=AUTH, params={**params, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        pages.append(data["items"])
        cursor = data["next_cursor"]
        if cursor is None:
            return pages


def test_events_listing_filters_searches_and_pages(api, receiver: FakeServer, hook_path, project):
    create_webhook(api, receiver.url(hook_path), project=project)
    ids = [post_release(api, project, version=f"5.{i}") for i in range(5)]
    for event_id in ids:
        wait_for_deliveries(api, event_id)
    pages = _pages(api, "/v1/events", project=project, limit=2)
    assert [len(p) for p in pages] == [2, 2, 1]
    listed = [e["id"] for p in pages for e in p]
    assert listed == list(reversed(ids))  # newest first, each once
    assert all(e["deliveries_by_state"] == {"delivered": 1} for p in pages for e in p)
    [found] = api.get("/v1/events", headers=AUTH, params={"q": f"release:{project}:5.3"}).json()["data"][
        "items"
    ]
    assert found["id"] == ids[3] and found["lifecycle_key"] == f"release:{project}:5.3"
    [by_id] = api.get("/v1/events", headers=AUTH, params={"q": ids[1]}).json()["data"]["items"]
    assert by_id["id"] == ids[1]
    assert (
        api.get("/v1/events", headers=AUTH, params={"project": project, "kind": "pipeline"}).json()["data"][
            "items"
        ]
        == []
    )
    assert error_of(api.get("/v1/events", headers=AUTH, params={"kind": "deploy"}))[0] == 422
    assert error_of(
        api.get(
            "/v1/events",
            headers=AUTH,
            params={"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
        )
    ) == (422, "invalid_field")
    assert error_of(api.get("/v1/events", headers=AUTH, params={"cursor": "garbage"})) == (
        422,
        "invalid_cursor",
    )


def test_deliveries_listing_and_dead_letter_provider_filter(api, receiver: FakeServer, hook_path, project):
    receiver.script(hook_path, Reply(400, b"bad"))
    integration_id = create_webhook(api, receiver.url(hook_path), project=project)
    first = post_release(api, project, version="6.0")
    assert wait_for_deliveries(api, first)[0]["state"] == "dead"
    for i in range(1, 3):
        wait_for_deliveries(api, post_release(api, project, version=f"6.{i}"))
    pages = _pages(api, "/v1/deliveries", integration_id=integration_id, limit=2)
    assert [len(p) for p in pages] == [2, 1]
    assert pages[-1][0]["event_id"] == first and pages[-1][0]["attempts"]
    dead = api.get("/v1/deliveries", headers=AUTH, params={"project": project, "state": "dead"}).json()[
        "data"
    ]
    assert [d["event_id"] for d in dead["items"]] == [first]
    assert error_of(api.get("/v1/deliveries", headers=AUTH, params={"state": "lost"}))[0] == 422
    by_provider = api.get(
        "/v1/dead-letters", headers=AUTH, params={"provider": "webhook", "project": project}
    ).json()["data"]
    assert by_provider["total"] == 1
    assert (
        api.get("/v1/dead-letters", headers=AUTH, params={"provider": "slack", "project": project}).json()[
            "data"
        ]["total"]
        == 0
    )
    # the provider filter is a selection for redrive too
    r = api.post("/v1/dead-letters/purge", headers=AUTH, json={"provider": "webhook", "project": project})
    assert r.status_code == 200 and r.json()["data"]["processed"] == 1


def test_rotating_a_key_revokes_the_old_one(api):
    r = api.post("/v1/keys", headers=AUTH, json={"name": "rotate-me", "scopes": ["read"]})
    old_key, key_id = r.json()["data"]["key"], r.json()["data"]["id"]
    r = api.post(f"/v1/keys/{key_id}/rotate", headers=AUTH)
    assert r.status_code == 201, r.text
    new = r.json()["data"]
    assert new["name"] == "rotate-me" and new["scopes"] == ["read"] and new["key"] != old_key
    assert api.get("/v1/keys", headers={"Authorization": f"Bearer {new['key']}"}).status_code == 200
    assert api.get("/v1/keys", headers={"Authorization": f"Bearer {old_key}"}).status_code == 401
    assert error_of(api.post(f"/v1/keys/{key_id}/rotate", headers=AUTH)) == (409, "key_revoked")
    assert error_of(api.post("/v1/keys/00000000-0000-0000-0000-000000000000/rotate", headers=AUTH))[0] == 404
