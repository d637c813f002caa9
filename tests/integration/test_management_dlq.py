"""Dead letters on real services: list with filters and counts, redrive (fresh budget, idempotent), purge,
background jobs for large sets (100k rows), and retention pruning through the real worker."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from celery import Celery

from tests.fakes.server import FakeServer, Reply
from tests.integration.stack import AUTH, Stack, create_webhook, post_release, wait_for_deliveries
from tests.integration.test_management import error_of, sql, wait_delivery

pytestmark = pytest.mark.integration


def make_dead(api, receiver: FakeServer, project: str, replies: list[Reply]) -> tuple[str, list[dict]]:
    path = f"/dlq/{project}"
    receiver.script(path, *replies)
    integration_id = create_webhook(api, receiver.url(path), project=project)
    dead = []
    for n in range(len(replies)):
        [d] = wait_for_deliveries(api, post_release(api, project, version=f"3.{n}"))
        assert d["state"] == "dead", d
        dead.append(d)
    return integration_id, dead


def wait_job(api, job_id: str, timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        job = api.get(f"/v1/dead-letters/jobs/{job_id}", headers=AUTH).json()["data"]
        if job["state"] in ("done", "failed") or time.monotonic() > deadline:
            assert job["state"] == "done", job
            return job
        time.sleep(0.1)


def test_list_filters_counts_and_pages(api, receiver: FakeServer, project):
    integration_id, dead = make_dead(
        api, receiver, project, [Reply(400, b"bad"), Reply(401, b"no"), Reply(400, b"bad again")]
    )
    r = api.get("/v1/dead-letters", headers=AUTH, params={"project": project})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["counts_by_reason"] == {"invalid_payload": 2, "auth_failed": 1} and data["total"] == 3
    assert [d["id"] for d in data["items"]] == [d["id"] for d in dead[::-1]]  # newest first
    first = data["items"][0]
    assert (first["project"], first["provider"], first["event_type"]) == (
        project,
        "webhook",
        "release.created",
    )

    only = api.get(
        "/v1/dead-letters", headers=AUTH, params={"integration_id": integration_id, "reason": "auth_failed"}
    )
    assert [d["id"] for d in only.json()["data"]["items"]] == [dead[1]["id"]]
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    assert (
        api.get("/v1/dead-letters", headers=AUTH, params={"project": project, "since": future}).json()[
            "data"
        ]["total"]
        == 0
    )
    assert (
        api.get("/v1/dead-letters", headers=AUTH, params={"project": project, "until": past}).json()["data"][
            "total"
        ]
        == 0
    )
    assert (
        api.get("/v1/dead-letters", headers=AUTH, params={"project": project, "since": past}).json()["data"][
            "total"
        ]
        == 3
    )

    page = api.get("/v1/dead-letters", headers=AUTH, params={"project": project, "limit": 2}).json()["data"]
    rest = api.get(
        "/v1/dead-letters",
        headers=AUTH,
        params={"project": project, "limit": 2, "cursor": page["next_cursor"]},
    ).json()["data"]
    assert [d["id"] for d in page["items"] + rest["items"]] == [d["id"] for d in dead[::-1]]
    assert rest["next_cursor"] is None and rest["total"] == 3

    naive = api.get("/v1/dead-letters", headers=AUTH, params={"since": "2026-01-01T00:00:00"})
    assert error_of(naive) == (422, "invalid_field")
    assert error_of(api.get("/v1/dead-letters", headers=AUTH, params={"state": "delivered"}))[0] == 422


def test_redrive_by_ids_is_idempotent_and_purge_deletes(api, stack: Stack, receiver: FakeServer, project):
    _, dead = make_dead(api, receiver, project, [Reply(400, b"bad"), Reply(400, b"bad"), Reply(401, b"no")])
    first = api.post("/v1/dead-letters/redrive", headers=AUTH, json={"ids": [dead[0]["id"]]})
    assert first.status_code == 200, first.text
    assert first.json()["data"] == {
        "action": "redrive",
        "matched": 1,
        "processed": 1,
        "state": "done",
        "job_id": None,
    }
    again = api.post("/v1/dead-letters/redrive", headers=AUTH, json={"ids": [dead[0]["id"]]})
    assert again.json()["data"]["processed"] == 0  # no longer dead: nothing re-queued twice
    redriven = wait_delivery(api, dead[0]["id"])
    assert redriven["state"] == "delivered" and redriven["attempt_count"] == 1
    assert len(receiver.requests(f"/dlq/{project}")) == 4  # 3 failures + exactly one redriven send

    r = api.post(
        "/v1/dead-letters/purge", headers=AUTH, json={"project": project, "reason": "invalid_payload"}
    )
    assert r.json()["data"]["processed"] == 1
    left = api.get("/v1/dead-letters", headers=AUTH, params={"project": project}).json()["data"]
    assert left["counts_by_reason"] == {"auth_failed": 1}
    assert sql(stack, "SELECT count(*) FROM attempt WHERE delivery_id = :d", d=dead[1]["id"])[0][0] == 0
    assert error_of(api.post("/v1/dead-letters/purge", headers=AUTH, json={})) == (422, "empty_selection")
    assert error_of(api.post("/v1/dead-letters/redrive", headers=AUTH, json={"states": []}))[0] == 422
    assert error_of(api.post("/v1/dead-letters/redrive", headers=AUTH, json={"ids": ["nope"]}))[0] == 422
    assert error_of(api.get(f"/v1/dead-letters/jobs/{uuid.uuid4()}", headers=AUTH)) == (404, "not_found")


def test_large_purge_runs_as_a_background_job(stack: Stack, receiver: FakeServer, project):
    with stack.client(dlq_inline_limit=2) as api:
        make_dead(api, receiver, project, [Reply(400, b"bad")] * 5)
        r = api.post("/v1/dead-letters/purge", headers=AUTH, json={"project": project})
        assert r.status_code == 202, r.text
        data = r.json()["data"]
        assert (data["matched"], data["state"]) == (5, "queued") and data["job_id"]
        job = wait_job(api, data["job_id"])
        assert (job["action"], job["matched"], job["processed"]) == ("purge", 5, 5)
        assert (
            api.get("/v1/dead-letters", headers=AUTH, params={"project": project}).json()["data"]["total"]
            == 0
        )


def test_retention_prunes_old_delivered_rows_and_events_but_keeps_dead_letters(
    api, stack: Stack, receiver, project
):
    hook = f"/ret/{project}"
    receiver.script(hook, Reply(200, b"{}"), Reply(400, b"bad"))
    create_webhook(api, receiver.url(hook), project=project)
    [delivered] = wait_for_deliveries(api, post_release(api, project, version="old-ok"))
    [dead] = wait_for_deliveries(api, post_release(api, project, version="old-dead"))
    [recent] = wait_for_deliveries(api, post_release(api, project, version="recent"))
    assert (delivered["state"], dead["state"], recent["state"]) == ("delivered", "dead", "delivered")
    old = datetime.now(UTC) - timedelta(days=45)
    sql(
        stack,
        "UPDATE delivery SET delivered_at = :t, updated_at = :t WHERE id IN (:a, :b)",
        t=old,
        a=delivered["id"],
        b=dead["id"],
    )
    sql(
        stack,
        "UPDATE event SET created_at = :t WHERE id IN (SELECT event_id FROM delivery WHERE id IN (:a, :b))",
        t=old,
        a=delivered["id"],
        b=dead["id"],
    )
    old_event = sql(stack, "SELECT event_id FROM delivery WHERE id = :a", a=delivered["id"])[0][0]

    app = Celery(broker=stack.env["HERALD_REDIS_URL"], set_as_current=False)
    queue = stack.env["HERALD_QUEUE_NAME"]
    app.send_task("herald.retention", queue=queue, routing_key=queue, exchange="")
    app.close()
    deadline = time.monotonic() + 30
    while sql(stack, "SELECT count(*) FROM delivery WHERE id = :a", a=delivered["id"])[0][0]:
        assert time.monotonic() < deadline, "retention never ran"
        time.sleep(0.1)
    assert sql(stack, "SELECT count(*) FROM attempt WHERE delivery_id = :a", a=delivered["id"])[0][0] == 0
    assert sql(stack, "SELECT count(*) FROM event WHERE id = :e", e=str(old_event))[0][0] == 0
    # The dead letter (and so its event) and the recent delivery stay.
    assert sql(
        stack, "SELECT state FROM delivery WHERE id IN (:b, :c) ORDER BY state", b=dead["id"], c=recent["id"]
    ) == [
        ("dead",),
        ("delivered",),
    ]


BULK_ROWS = 100_000


def test_redrive_of_100k_dead_letters_answers_at_once_and_finishes_in_the_background(
    own_stack: Stack, receiver
):
    """No beat here, so the redriven rows stay `pending` for the sweeper instead of being sent 100k times."""
    own_stack.start_worker()
    with own_stack.client() as api:
        integration_id = create_webhook(api, receiver.url("/bulk"), project="bulk")
        t0 = time.perf_counter()
        sql(
            own_stack,
            """
            WITH e AS (
                INSERT INTO event (id, kind, type, project, environment, severity, payload, idempotency_key,
                                   request_hash, fanned_out_at, next_fanout_at)
                SELECT gen_random_uuid(), 'release', 'release.created', 'bulk', 'prod', 'info',
                       jsonb_build_object('project', 'bulk', 'environment', 'prod', 'version', g::text),
                       'bulk/' || g, 'x', now(), now()
                  FROM generate_series(1, :n) g
                RETURNING id
            ), d AS (
                INSERT INTO delivery (id, event_id, integration_id, state, attempt_count, dead_reason,
                                      last_error_class)
                SELECT gen_random_uuid(), e.id, :i, 'dead', 6, 'attempts_exhausted', 'provider_unavailable' FROM e
                RETURNING id
            )
            INSERT INTO attempt (delivery_id, attempt_no, started_at, duration_ms, outcome, status_code)
            SELECT id, 6, now(), 12.5, 'dead', 503 FROM d
            """,
            n=BULK_ROWS,
            i=integration_id,
        )
        print(f"\nseeded {BULK_ROWS} dead letters in {time.perf_counter() - t0:.1f} s")
        listed = api.get(
            "/v1/dead-letters", headers=AUTH, params={"integration_id": integration_id, "limit": 5}
        )
        assert listed.json()["data"]["counts_by_reason"] == {"attempts_exhausted": BULK_ROWS}

        t0 = time.perf_counter()
        r = api.post("/v1/dead-letters/redrive", headers=AUTH, json={"integration_id": integration_id})
        request_s = time.perf_counter() - t0
        assert r.status_code == 202, r.text
        data = r.json()["data"]
        assert (data["matched"], data["state"]) == (BULK_ROWS, "queued")
        t0 = time.perf_counter()
        job = wait_job(api, data["job_id"], timeout_s=300)
        job_s = time.perf_counter() - t0
        print(
            f"redrive request answered in {request_s * 1000:.0f} ms; job moved {job['processed']} rows in {job_s:.1f} s"
        )
        assert request_s < 10  # generous: proves the request does not do the work itself
        assert job["processed"] == BULK_ROWS
        assert sql(
            own_stack,
            "SELECT state, attempt_count, count(*) FROM delivery WHERE integration_id = :i GROUP BY 1, 2",
            i=integration_id,
        ) == [("pending", 0, BULK_ROWS)]
        assert sql(own_stack, "SELECT redrives_ago, count(*) FROM attempt GROUP BY 1") == [(1, BULK_ROWS)]
        again = api.post("/v1/dead-letters/redrive", headers=AUTH, json={"integration_id": integration_id})
        assert again.status_code == 200 and again.json()["data"]["processed"] == 0
