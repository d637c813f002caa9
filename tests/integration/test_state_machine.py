"""The delivery state machine end to end: one bad row fails only its own delivery, disabling stops retries,
pacing does not spend the budget, a hanging destination holds nobody else up, and outcomes are logged.

Each test names, in its docstring, what the code before shared/deliveries.py and workers/dispatch.py did.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from celery import Celery
from sqlalchemy import create_engine, text

from shared.crypto import KeyRing
from tests.fakes.server import FakeServer, Reply
from tests.fakes.webhook import retry_after
from tests.integration.stack import (
    AUTH,
    Stack,
    create_webhook,
    post_release,
    wait_for_deliveries,
    wait_until,
)

pytestmark = pytest.mark.integration

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def sql(stack: Stack, statement: str, **params: Any) -> list[Any]:
    engine = create_engine(stack.env["HERALD_DATABASE_URL"])
    try:
        with engine.begin() as conn:
            result = conn.execute(text(statement), params)
            return [tuple(r) for r in result] if result.returns_rows else []
    finally:
        engine.dispose()


def test_integration_deleted_mid_send_leaves_the_co_batched_delivery_delivered_once(
    own_stack: Stack, receiver: FakeServer, project
):
    """Repro (before): both deliveries of one event sent in one batch, integration A deleted while its send was
    in flight: record() raised a foreign-key error on A's attempt row, the whole batch's outcomes were rolled
    back, B's successfully sent delivery stayed `sending` and was sent again once its lease ran out."""
    slow_a, slow_b = f"/del/{project}/a", f"/del/{project}/b"
    receiver.script(slow_a, Reply(200, b"ok", delay_s=2))
    receiver.script(slow_b, Reply(200, b"ok", delay_s=2))
    own_stack.start_worker()
    with own_stack.client() as api:
        a = create_webhook(api, receiver.url(slow_a), project=project)
        b = create_webhook(api, receiver.url(slow_b), project=project)
        event_id = post_release(api, project)
        assert len(receiver.wait_for(slow_a, 1)) == len(receiver.wait_for(slow_b, 1)) == 1
        assert api.delete(f"/v1/integrations/{a}", headers=AUTH).status_code == 204
        [delivery] = wait_for_deliveries(api, event_id, timeout_s=30)
        assert delivery["integration_id"] == b
        assert delivery["state"] == "delivered"
        assert [x["outcome"] for x in delivery["attempts"]] == ["delivered"]
        assert len(receiver.requests(slow_b)) == 1


def test_a_config_that_will_not_parse_fails_only_its_own_delivery(
    own_stack: Stack, receiver: FakeServer, project
):
    """Repro (before): a stored config that decrypts to something other than a JSON object raised out of
    prepare() for the whole batch, so the good integration's delivery stayed `sending` until its lease ran out
    and the bad one was retried the same way, forever."""
    good_path, bad_path = f"/cfg/{project}/good", f"/cfg/{project}/bad"
    own_stack.start_worker()
    with own_stack.client() as api:
        good = create_webhook(api, receiver.url(good_path), project=project)
        bad = create_webhook(api, receiver.url(bad_path), project=project)
        keyring = KeyRing.parse(own_stack.env["HERALD_ENCRYPTION_KEYS"])
        # A ciphertext that decrypts (right key, bound to its row as shared/secrets_at_rest.py binds it) to
        # bytes that are not a JSON object.
        blob = keyring.encrypt(b"not json", associated_data=b"herald:integration:" + uuid.UUID(bad).bytes)
        sql(own_stack, "UPDATE integration SET config_ciphertext = :c WHERE id = :i", c=blob, i=bad)
        event_id = post_release(api, project)
        deliveries = wait_for_deliveries(api, event_id, count=2, timeout_s=15)
        by_integration = {d["integration_id"]: d for d in deliveries}
        assert by_integration[good]["state"] == "delivered"
        assert (by_integration[bad]["state"], by_integration[bad]["dead_reason"]) == ("dead", "config_error")
        assert "not a JSON object" in by_integration[bad]["last_error_detail"]
        assert len(receiver.requests(good_path)) == 1
        assert receiver.requests(bad_path) == []


def test_disabling_an_integration_stops_its_queued_retries(own_stack: Stack, receiver: FakeServer, project):
    """Repro (before): claim did not look at the integration, so a disabled integration's retrying delivery was
    claimed and sent again on every retry until its budget was spent."""
    path = f"/disable/{project}"
    receiver.script(path, *[Reply(500, b"down")] * 3)  # then 200s
    own_stack.start_beat()
    own_stack.start_worker()
    with own_stack.client() as api:
        integration_id = create_webhook(api, receiver.url(path), project=project)
        # Scaled by the stacks' retry_time_scale (0.02): retries after about 2, 4, 8 ... s.
        r = api.patch(f"/v1/integrations/{integration_id}", headers=AUTH, json={"retry_base_delay_s": 100})
        assert r.status_code == 200, r.text
        event_id = post_release(api, project)
        assert len(receiver.wait_for(path, 2, timeout_s=15)) == 2
        r = api.patch(f"/v1/integrations/{integration_id}", headers=AUTH, json={"enabled": False})
        assert r.status_code == 200, r.text
        [delivery] = wait_for_deliveries(api, event_id, timeout_s=30)
        sent = len(receiver.requests(path))
        assert delivery["state"] == "skipped"
        assert delivery["last_error_class"] == "integration_disabled"
        # Skipped is at rest: nothing claims it again, so the count above is final until a replay.
        assert sent == delivery["attempt_count"]

        # Replayable: enable again, redrive the skipped row, and it is sent again with a fresh budget until
        # the receiver (healed after three 500s) takes it.
        assert (
            api.patch(f"/v1/integrations/{integration_id}", headers=AUTH, json={"enabled": True}).status_code
            == 200
        )
        r = api.post(
            "/v1/dead-letters/redrive", headers=AUTH, json={"ids": [delivery["id"]], "states": ["skipped"]}
        )
        assert r.status_code == 200, r.text
        assert r.json()["data"]["processed"] == 1
        [replayed] = wait_for_deliveries(api, event_id, states={"delivered"})
        assert len(receiver.requests(path)) == sent + replayed["attempt_count"]


def test_pacing_does_not_use_the_retry_budget(api, receiver: FakeServer, hook_path, project):
    """Repro (before): with one retry allowed, a vendor answering 429 with Retry-After twice ended the delivery
    dead `attempts_exhausted` after two attempts, though the vendor only set our pace."""
    receiver.script(hook_path, retry_after(0), retry_after(0, status=503), retry_after(0))
    integration_id = create_webhook(api, receiver.url(hook_path), project=project)
    r = api.patch(f"/v1/integrations/{integration_id}", headers=AUTH, json={"retry_max_retries": 1})
    assert r.status_code == 200, r.text
    event_id = post_release(api, project)
    [delivery] = wait_for_deliveries(api, event_id, timeout_s=20)
    assert delivery["state"] == "delivered"
    assert delivery["attempt_count"] == 4
    assert [a["error_class"] for a in delivery["attempts"]] == ["rate_limited"] * 3 + [None]


def test_a_vendor_that_paces_forever_still_ends_dead(
    own_stack: Stack, receiver: FakeServer, hook_path, project
):
    """Pacing is bounded by elapsed time (rate_limited_max_elapsed_s), not by the budget it does not use."""
    receiver.script(hook_path, *[retry_after(1)] * 50)
    own_stack.env["HERALD_RATE_LIMITED_MAX_ELAPSED_S"] = "2.5"
    own_stack.start_beat()
    own_stack.start_worker()
    with own_stack.client() as api:
        create_webhook(api, receiver.url(hook_path), project=project)
        event_id = post_release(api, project)
        [delivery] = wait_for_deliveries(api, event_id, timeout_s=30)
        assert (delivery["state"], delivery["dead_reason"]) == ("dead", "rate_limited_too_long")
        assert "rate limited for" in delivery["last_error_detail"]
        assert 2 <= delivery["attempt_count"] <= 4


def test_a_hanging_destination_holds_up_no_other(own_stack: Stack, receiver: FakeServer, project):
    """Repro (before): each fan-out task sent its deliveries itself and waited for the slowest; with a receiver
    that accepts and does not answer, every worker thread sat in that timeout, and the fast receiver's
    deliveries of later events waited for a free thread (here 2 threads, 30 s timeouts: the third event's
    fast delivery waited about 15 s)."""
    hang, fast = f"/hang/{project}", f"/fast/{project}"
    receiver.script(hang, *[Reply(200, b"late", delay_s=15)] * 20)
    own_stack.start_worker(concurrency=2)
    with own_stack.client() as api:
        create_webhook(api, receiver.url(hang), project=project, timeout_s=30)
        create_webhook(api, receiver.url(fast), project=project)
        for n in range(1, 7):
            post_release(api, project, version=f"1.0.{n}")
            # Each event is its own fan-out: the fast receiver has it long before the hanging one answers.
            assert len(receiver.wait_for(fast, n, timeout_s=8)) == n, f"event {n} held up by the hanging one"
        assert len(receiver.requests(hang)) == 6  # all sent, none answered yet


def test_outcomes_that_are_not_a_success_are_logged_without_secrets(
    own_stack: Stack, receiver: FakeServer, hook_path, project
):
    """Issue 16: a retrying attempt is logged at INFO, a dead one at WARNING, with the delivery, integration,
    provider, error class, detail and next attempt time; the webhook secret appears nowhere."""
    receiver.script(hook_path, Reply(500, b"oops"), Reply(400, b"bad"))
    own_stack.start_beat()
    own_stack.start_worker()
    with own_stack.client() as api:
        integration_id = create_webhook(api, receiver.url(hook_path), project=project, signing_secret=SECRET)
        event_id = post_release(api, project)
        [delivery] = wait_for_deliveries(api, event_id)
        assert delivery["state"] == "dead"
    log = (own_stack.workdir / "worker-1.log").read_text()
    [retrying] = [line for line in log.splitlines() if delivery["id"] in line and " retrying " in line]
    [dead] = [line for line in log.splitlines() if delivery["id"] in line and " dead " in line]
    for line, level in ((retrying, "INFO"), (dead, "WARNING")):
        assert level in line
        assert integration_id in line and "webhook" in line
    assert "provider_unavailable" in retrying and "next attempt 20" in retrying  # an ISO timestamp, 20xx
    assert "invalid_payload" in dead and "next attempt none" in dead
    assert SECRET not in log


def test_old_skipped_deliveries_no_longer_pin_their_events(api, stack: Stack, receiver: FakeServer, project):
    """Repro (before): retention pruned only delivered rows, so an event with a skipped delivery (its integration
    disabled) was kept forever, however old."""
    integration_id = create_webhook(api, receiver.url(f"/skip/{project}"), project=project)
    assert (
        api.patch(f"/v1/integrations/{integration_id}", headers=AUTH, json={"enabled": False}).status_code
        == 200
    )
    old_event = post_release(api, project, version="old-skipped")
    recent_event = post_release(api, project, version="recent-skipped")
    [old] = wait_for_deliveries(api, old_event)
    [recent] = wait_for_deliveries(api, recent_event)
    assert (old["state"], recent["state"]) == ("skipped", "skipped")
    long_ago = datetime.now(UTC) - timedelta(days=45)
    sql(stack, "UPDATE delivery SET updated_at = :t WHERE id = :d", t=long_ago, d=old["id"])
    sql(stack, "UPDATE event SET created_at = :t WHERE id = :e", t=long_ago, e=old_event)

    app = Celery(broker=stack.env["HERALD_REDIS_URL"], set_as_current=False)
    queue = stack.env["HERALD_QUEUE_NAME"]
    app.send_task("herald.retention", queue=queue, routing_key=queue, exchange="")
    app.close()
    wait_until(
        lambda: sql(stack, "SELECT count(*) FROM event WHERE id = :e", e=old_event) == [(0,)],
        30,
        "the old skipped delivery's event was never pruned",
    )
    assert sql(stack, "SELECT count(*) FROM delivery WHERE id = :d", d=old["id"]) == [(0,)]
    assert sql(stack, "SELECT state FROM delivery WHERE id = :d", d=recent["id"]) == [("skipped",)]
