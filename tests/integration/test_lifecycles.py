"""One message per lifecycle, edited in place, through the real pipeline (API -> PostgreSQL -> Redis -> celery
workers -> fake vendors that keep every message and every edit).

Before issue 11's wiring, fan-out looked the previous delivered ref up once, at fan-out time, and sends of one
lifecycle raced each other. Repro on 110442c (this file copied over it): the first test sees Slack edited to
step 3 and then back to step 2 (`[0, 1, 3, 2, 4]`), and the burst never ends on the last state (pytest timeout).
"""

from __future__ import annotations

import re
import threading
from typing import Any

import orjson
import pytest

from tests.fakes import slack as slack_fake
from tests.fakes.discord import DiscordFake
from tests.fakes.pagerduty import PagerDutyFake
from tests.fakes.server import FakeServer, Reply
from tests.fakes.slack import SlackFake
from tests.integration.lifecycles import FINAL, channel_credentials, lifecycle_rows, routed, settled
from tests.integration.stack import AUTH, Stack, wait_until
from tests.integration.test_gateway import event_body, ok, update_body
from tests.integration.test_recovery import private_redis, private_stack  # noqa: F401  (fixtures)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def slack() -> Any:
    with SlackFake() as server:
        yield server


@pytest.fixture(scope="module")
def discord() -> Any:
    with DiscordFake() as server:
        yield server


@pytest.fixture(scope="module")
def pagerduty() -> Any:
    with PagerDutyFake() as server:
        yield server


def slack_bot(
    api: Any, slack: SlackFake, project: str, slot: str, *, timeout_s: float = 3, **route: Any
) -> str:
    config = {
        "token": slack.token,
        "channel": slack_fake.CHANNEL_ID,
        "api_base_url": slack.api_base(slot),
        "timeout_s": timeout_s,
    }
    return routed(api, project, "slack_bot", config, **route)


def slack_history(slack: SlackFake, slot: str) -> list[tuple[str, dict[str, Any]]]:
    """(method, body) of every chat call of this slot, in arrival order."""
    calls = [
        (r.arrived_at, r.path.rsplit("/", 1)[-1], orjson.loads(r.body))
        for path in (f"/{slot}/api/chat.postMessage", f"/{slot}/api/chat.update")
        for r in slack.requests(path)
    ]
    return [(method, body) for _, method, body in sorted(calls, key=lambda c: c[0])]


def steps(history: list[tuple[str, dict[str, Any]]]) -> list[int]:
    return [
        int(m.group(1)) for _, body in history if (m := re.search(r"step (\d+)", orjson.dumps(body).decode()))
    ]


def test_a_root_post_that_landed_after_our_timeout_is_adopted_not_posted_twice(
    api, stack: Stack, slack: SlackFake, project: str
):
    """Repro (before): the incident's root went to chat.postMessage, Slack posted it but answered after our 1 s
    timeout, and the retry posted it again: two roots in the channel, the close edited only one. Now the retry
    finds the landed post in conversations.history (by the delivery id in its metadata) and the close edits it."""
    slot = f"late{project[-6:]}"
    slack_bot(api, slack, project, slot, timeout_s=1)
    slack.slow_posts, slack.slow_post_delay_s = 1, 2.5
    creds = channel_credentials(api, project)
    event_id = ok(api.post("/event/create", json=event_body(creds, message="step 0")))["event_id"]
    key = f"incident:{creds['channel_id']}:{event_id}"
    wait_until(
        lambda: settled(stack, key, 1, 1), 60, lambda: f"root not delivered: {lifecycle_rows(stack, key)}"
    )
    ok(
        api.post(
            "/event/close",
            json=update_body(creds, event_id, status="resolved", message="step 1", event_time=1713750100),
        )
    )
    wait_until(
        lambda: settled(stack, key, 1, 2), 60, lambda: f"close not delivered: {lifecycle_rows(stack, key)}"
    )
    posts = slack.requests(f"/{slot}/api/chat.postMessage")
    assert len(posts) == 1, [
        orjson.loads(p.body).get("text") for p in posts
    ]  # the retry looked, did not post
    assert slack.requests(f"/{slot}/api/conversations.history")
    [update] = [body for method, body in slack_history(slack, slot) if method == "chat.update"]
    assert "[CLOSED]" in orjson.dumps(slack.messages[(update["channel"], update["ts"])]).decode()


def test_incident_is_one_message_per_destination_edited_to_its_final_state(
    api,
    stack: Stack,
    slack: SlackFake,
    discord: DiscordFake,
    pagerduty: PagerDutyFake,
    receiver: FakeServer,
    hook_path: str,
    project: str,
):
    """create, then three updates and a close sent back to back (they arrive while edits are in flight):
    Slack bot and Discord show ONE message, edited to [CLOSED]; PagerDuty one alert on the lifecycle key,
    resolved; the webhook receives the lifecycle in sequence order, ending closed. No delivery is dead."""
    slot = f"e2e{project[-6:]}"
    slack_bot(api, slack, project, slot)
    routed(api, project, "discord", {"webhook_url": discord.webhook_url(slot), "timeout_s": 3})
    routed(
        api,
        project,
        "pagerduty",
        {"routing_key": "R0UT1NGKEY0000000000000000000001", "events_url": pagerduty.events_url(slot)},
    )
    routed(api, project, "webhook", {"url": receiver.url(hook_path)})
    discord_before = set(discord.messages)
    creds = channel_credentials(api, project)
    event_id = ok(api.post("/event/create", json=event_body(creds, message="step 0")))["event_id"]
    key = f"incident:{creds['channel_id']}:{event_id}"
    # The root first (else it may be superseded before it is sent: then the close is the root, also right).
    wait_until(lambda: settled(stack, key, 4, 1), 60, f"root not delivered: {lifecycle_rows(stack, key)}")
    for i in range(1, 4):
        ok(
            api.post(
                "/event/update",
                json=update_body(creds, event_id, message=f"step {i}", event_time=1713750000 + i),
            )
        )
    ok(
        api.post(
            "/event/close",
            json=update_body(creds, event_id, status="resolved", message="step 4", event_time=1713750100),
        )
    )
    key = f"incident:{creds['channel_id']}:{event_id}"
    wait_until(
        lambda: settled(stack, key, 4, 5), 90, f"lifecycle {key} never settled: {lifecycle_rows(stack, key)}"
    )

    assert not [r for r in lifecycle_rows(stack, key) if r.state == "dead"]
    history = slack_history(slack, slot)
    assert [m for m, _ in history].count("chat.postMessage") == 1, history
    assert steps(history) == sorted(steps(history)) and steps(history)[-1] == 4
    last_edit = history[-1][1]
    assert history[-1][0] == "chat.update"
    assert "[CLOSED]" in orjson.dumps(slack.messages[(last_edit["channel"], last_edit["ts"])]).decode()

    new_discord = [m for m in discord.messages if m not in discord_before]
    assert len(new_discord) == 1, new_discord
    assert "[CLOSED]" in orjson.dumps(discord.messages[new_discord[0]]).decode()

    [alert] = pagerduty.alerts_for(key)
    assert alert.status == "resolved" and alert.history[0] == "trigger" and alert.history[-1] == "resolve"

    bodies = [orjson.loads(r.body) for r in receiver.requests(hook_path)]
    sequences = [b["data"]["lifecycle"]["sequence"] for b in bodies]
    # Older states still waiting when a newer one is due are superseded, so the receiver may not see all 5.
    assert sequences == sorted(sequences) and sequences[-1] == 5
    assert bodies[-1]["data"]["state"]["open"] is False


def test_edit_in_place_off_posts_every_state_as_a_new_message(
    api, stack: Stack, slack: SlackFake, project: str
):
    """A route with edit_in_place=false: each state is a message of its own (no chat.update, none superseded)."""
    slot = f"off{project[-6:]}"
    slack_bot(api, slack, project, slot, edit_in_place=False)
    creds = channel_credentials(api, project)
    event_id = ok(api.post("/event/create", json=event_body(creds, message="step 0")))["event_id"]
    ok(api.post("/event/close", json=update_body(creds, event_id, status="resolved", message="step 1")))
    key = f"incident:{creds['channel_id']}:{event_id}"
    wait_until(
        lambda: [r.state for r in lifecycle_rows(stack, key)] == ["delivered", "delivered"],
        60,
        f"both states were not delivered: {lifecycle_rows(stack, key)}",
    )
    assert [m for m, _ in slack_history(slack, slot)] == ["chat.postMessage", "chat.postMessage"]
    routes = api.get("/v1/routes", headers=AUTH).json()["data"]
    assert any(r["edit_in_place"] is False for r in routes if r["project"] == project)


def test_burst_of_50_updates_from_8_clients_and_2_workers_ends_on_the_last_state(
    own_stack: Stack, slack: SlackFake, project: str
):
    """50 updates of one incident from 8 concurrent clients, 2 worker processes: one root message, the
    destination ends on the newest state (largest event_time), and no edit ever shows an older step after a
    newer one. The older updates end `superseded` (not dead, no attempt used)."""
    own_stack.start_beat()
    own_stack.start_worker()
    second, _ = own_stack._start_celery_worker(
        "worker-b", own_stack.env["HERALD_QUEUE_NAME"], 8, metrics_port=0
    )
    try:
        slot = f"burst{project[-6:]}"
        with own_stack.client() as api:
            # A generous timeout: on a loaded machine the in-process fake can answer after 3 s, and a post it
            # did receive is then posted again on retry (at-least-once: chat.postMessage has no idempotency
            # key). This test is about order and supersession, not about that.
            slack_bot(api, slack, project, slot, timeout_s=20)
            creds = channel_credentials(api, project)
            event_id = ok(api.post("/event/create", json=event_body(creds, message="step 0")))["event_id"]
        errors: list[str] = []

        def client(n: int) -> None:
            with own_stack.client() as c:
                for i in range(1 + n, 51, 8):
                    r = c.post(
                        "/event/update",
                        json=update_body(creds, event_id, message=f"step {i}", event_time=1713750000 + i),
                    )
                    if r.status_code != 200:
                        errors.append(r.text)

        threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        key = f"incident:{creds['channel_id']}:{event_id}"

        def newest_shown() -> bool:
            rows = lifecycle_rows(own_stack, key)
            return (
                len(rows) == 51
                and all(r.state in FINAL for r in rows)
                and bool(steps(slack_history(slack, slot)))
                and steps(slack_history(slack, slot))[-1] == 50
            )

        wait_until(newest_shown, 100, f"the last state was never shown: {steps(slack_history(slack, slot))}")
        history = slack_history(slack, slot)
        assert [m for m, _ in history].count("chat.postMessage") == 1, [m for m, _ in history]
        shown = steps(history)
        assert shown == sorted(shown), shown
        rows = lifecycle_rows(own_stack, key)
        assert not [r for r in rows if r.state == "dead"]
        superseded = [r for r in rows if r.state == "superseded"]
        assert superseded and all(r.attempt_count == 0 and r.last_error_detail for r in superseded)
    finally:
        import os
        import signal

        os.killpg(second.pid, signal.SIGKILL)
        second.wait(10)


def test_worker_sigkill_and_redis_flushall_mid_lifecycle_still_end_on_the_final_message(
    private_stack: Stack,  # noqa: F811
    slack: SlackFake,
    project: str,
):
    """The root is delivered; the worker is SIGKILLed while an edit hangs at Slack, Redis is flushed, the
    incident is closed, a new worker starts: the close edits the same message (its ref is in PostgreSQL)."""
    slot = f"kill{project[-6:]}"
    private_stack.start_beat()
    private_stack.start_worker()
    with private_stack.client() as api:
        slack_bot(api, slack, project, slot)
        creds = channel_credentials(api, project)
        event_id = ok(api.post("/event/create", json=event_body(creds, message="step 0")))["event_id"]
        slack.wait_for(f"/{slot}/api/chat.postMessage", 1, timeout_s=60)
        key = f"incident:{creds['channel_id']}:{event_id}"
        wait_until(lambda: settled(private_stack, key, 1, 1), 60, "the root was never delivered")
        slack.script(
            f"/{slot}/api/chat.update",
            Reply(200, b'{"ok": true}', delay_s=4, content_type="application/json"),
        )
        ok(
            api.post(
                "/event/update", json=update_body(creds, event_id, message="step 1", event_time=1713750001)
            )
        )
        slack.wait_for(f"/{slot}/api/chat.update", 1, timeout_s=60)
        private_stack.kill_worker()
        private_stack.redis.flushall()  # a private redis-server: nobody else's data
        ok(
            api.post(
                "/event/close",
                json=update_body(creds, event_id, status="resolved", message="step 2", event_time=1713750002),
            )
        )
        private_stack.start_worker()
        wait_until(
            lambda: settled(private_stack, key, 1, 3),
            120,
            f"never settled: {lifecycle_rows(private_stack, key)}",
        )
    history = slack_history(slack, slot)
    assert [m for m, _ in history].count("chat.postMessage") == 1, history
    assert steps(history)[-1] == 2
    assert "[CLOSED]" in orjson.dumps(history[-1][1]).decode()
