"""`POST /v1/events/batch` against real PostgreSQL and a real worker: per-item validation and idempotency as for
single events, oversize batches, partial-invalid batches (the valid items stored, the others refused alone),
and the stored events delivered."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests.integration.stack import AUTH, Stack, create_webhook, release_event, wait_until

pytestmark = pytest.mark.integration


def events_of(stack: Stack, project: str) -> list[tuple[Any, ...]]:
    engine = create_engine(stack.env["HERALD_DATABASE_URL"])
    try:
        with engine.begin() as conn:
            rows = conn.execute(
                text("SELECT id, idempotency_key, payload->>'version' FROM event WHERE project = :p"),
                {"p": project},
            )
            return [tuple(r) for r in rows]
    finally:
        engine.dispose()


def release(project: str, version: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "release", **release_event(project, version=version), **extra}


def pipeline(project: str, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "pipeline",
        "app": "shop",
        "project": project,
        "environment": "prod",
        "pipeline": "deploy",
        "pipeline_type": "cd",
        "stage": "success",
        **extra,
    }


def test_a_batch_is_stored_with_one_result_per_item_and_delivered(api, stack, project, receiver, hook_path):
    create_webhook(api, receiver.url(hook_path), project=project)
    items = [release(project, f"5.0.{i}") for i in range(20)] + [pipeline(project)]
    r = api.post("/v1/events/batch", headers=AUTH, json={"events": items})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["success"] is True and body["data"]["accepted"] == 21 and body["data"]["refused"] == 0
    results = body["data"]["results"]
    assert [x["success"] for x in results] == [True] * 21
    assert all(x["data"]["duplicate"] is False and x["error_code"] is None for x in results)
    stored = events_of(stack, project)
    assert {str(row[0]) for row in stored} == {x["data"]["event_id"] for x in results}
    wait_until(lambda: len(receiver.requests(hook_path)) >= 21, 60, "the batch's events were not delivered")


def test_partial_invalid_batch_stores_the_valid_items_and_refuses_the_others_alone(api, stack, project):
    items = [
        release(project, "6.0.0"),
        release(project, "6.0.1", colour="blue"),  # unknown field
        {"kind": "deploy", "project": project},  # unknown kind
        release(project, "6.0.2", type="release.deleted"),  # invalid value
        "not an object",
        release(project, "6.0.3", description="nul \u0000 inside"),  # cannot be stored
        release(project, "6.0.4"),
    ]
    r = api.post("/v1/events/batch", headers=AUTH, json={"events": items})
    assert r.status_code == 202, r.text
    results = r.json()["data"]["results"]
    assert [x["error_code"] for x in results] == [
        None,
        "unknown_field",
        "unknown_event_kind",
        "invalid_field",
        "invalid_body",
        "invalid_field",
        None,
    ]
    assert all(x["data"] is None and x["error"] for x in results if not x["success"])
    assert r.json()["data"]["accepted"] == 2
    assert sorted(row[2] for row in events_of(stack, project)) == ["6.0.0", "6.0.4"]


def test_idempotency_per_item_within_a_batch_and_across_requests(api, stack, project):
    key, other = f"op-{uuid.uuid4().hex}", f"op-{uuid.uuid4().hex}"
    first = api.post(
        "/v1/events/batch",
        headers=AUTH,
        json={
            "events": [
                release(project, "7.0.0", op_id=key),
                release(project, "7.0.0", op_id=key),  # the same event twice: one row, a duplicate
                release(project, "7.0.9", op_id=key),  # the same key for another event: a conflict
                release(project, "7.1.0", op_id=other),
            ]
        },
    )
    results = first.json()["data"]["results"]
    assert [(x["success"], x["error_code"]) for x in results] == [
        (True, None),
        (True, None),
        (False, "idempotency_conflict"),
        (True, None),
    ]
    assert [x["data"]["duplicate"] for x in results if x["success"]] == [False, True, False]
    assert results[0]["data"]["event_id"] == results[1]["data"]["event_id"]
    # Replayed later, alone or in a batch: the same event ids, nothing new stored.
    single = api.post(
        "/v1/events/release", headers=AUTH, json={**release_event(project, version="7.1.0"), "op_id": other}
    )
    assert single.status_code == 202 and single.json()["data"]["duplicate"] is True
    assert single.json()["data"]["event_id"] == results[3]["data"]["event_id"]
    again = api.post(
        "/v1/events/batch", headers=AUTH, json={"events": [release(project, "7.0.0", op_id=key)]}
    )
    assert again.json()["data"]["results"][0]["data"] == {**results[0]["data"], "duplicate": True}
    assert len(events_of(stack, project)) == 2


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"events": []}, 422, "empty_batch"),
        ({"events": {"a": 1}}, 422, "invalid_body"),
        ({"events": [], "extra": 1}, 422, "unknown_field"),
        ([1, 2], 422, "invalid_body"),
    ],
)
def test_a_malformed_batch_is_refused_whole_with_a_code(api, project, body, status, code):
    r = api.post("/v1/events/batch", headers=AUTH, json=body)
    assert (r.status_code, r.json()["error_code"]) == (status, code)


def test_an_oversize_batch_is_refused_and_nothing_is_stored(api, stack, project):
    too_many = [release(project, f"8.0.{i}") for i in range(501)]
    r = api.post("/v1/events/batch", headers=AUTH, json={"events": too_many})
    assert (r.status_code, r.json()["error_code"]) == (413, "batch_too_large")
    # 500 events at their largest fit in the batch's 4 MiB; a body past it is refused before it is parsed.
    huge = [release(project, "8.1.0", description="x" * 5 * 1024 * 1024)]
    big = api.post("/v1/events/batch", headers=AUTH, json={"events": huge})
    assert (big.status_code, big.json()["error_code"]) == (413, "body_too_large")
    assert events_of(stack, project) == []
    # The batch's own limit is the only larger one: a single event keeps the 64 KiB bound.
    single = api.post(
        "/v1/events/release", headers=AUTH, json=release_event(project, description="x" * 70_000)
    )
    assert single.status_code == 413


def test_a_batch_needs_an_ingest_key_and_respects_the_keys_project(api, project):
    r = api.post("/v1/events/batch", json={"events": [release(project, "9.0.0")]})
    assert (r.status_code, r.json()["error_code"]) == (401, "unauthorized")
    r = api.post(
        "/v1/events/batch",
        headers={**AUTH, "Content-Type": "text/plain"},
        content=b'{"events": []}',
    )
    assert (r.status_code, r.json()["error_code"]) == (415, "unsupported_media_type")
