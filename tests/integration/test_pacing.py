"""Pacing and bulkheads end to end (issue 12): two worker processes share one limiter per destination in Redis.

The fakes enforce their vendor's rate (Slack 1 per 1 s per webhook with 429 + Retry-After; Discord 5 per 2 s
per webhook with the body's `retry_after`). With pacing, a burst drains at the destination's rate: every event
delivered, no budget spent, at most a handful of 429s. The same burst with pacing off (what Herald did before
issue 12: every worker sending as fast as it could) is answered with 429 after 429.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from tests.fakes.discord import DiscordFake
from tests.fakes.ratelimit import RateLimit
from tests.fakes.server import FakeServer, Reply
from tests.fakes.slack import SlackFake
from tests.integration.stack import AUTH, Stack, create_webhook, post_release, release_event, wait_until

pytestmark = pytest.mark.integration

#: the pacing-off burst: 60 events from two workers at once, answered with 429 after 429
BURST = 60
#: the paced Discord burst: 30 events at 5 per 2 s are 12 s of slots, six waves of the webhook's window
DISCORD_BURST = 30
#: a Slack burst is 1 per second: 20 events are 20 s of slots. With pacing off, two workers send them at once and
#: the webhook refuses 19 of them, far past the 5 the test allows.
SLACK_BURST = 20


def sql(stack: Stack, statement: str, **params: Any) -> list[Any]:
    engine = create_engine(stack.env["HERALD_DATABASE_URL"])
    try:
        with engine.begin() as conn:
            result = conn.execute(text(statement), params)
            return [tuple(r) for r in result] if result.returns_rows else []
    finally:
        engine.dispose()


def create_integration(api: TestClient, provider: str, project: str, config: dict[str, Any]) -> str:
    r = api.post(
        "/v1/integrations",
        headers=AUTH,
        json={
            "name": f"{provider}-{uuid.uuid4().hex[:6]}",
            "provider": provider,
            "project": project,
            "config": config,
        },
    )
    assert r.status_code == 201, r.text
    integration_id: str = r.json()["data"]["id"]
    r = api.post("/v1/routes", headers=AUTH, json={"integration_id": integration_id, "project": project})
    assert r.status_code == 201, r.text
    return integration_id


def states(stack: Stack, integration_id: str) -> dict[str, int]:
    rows = sql(
        stack,
        "SELECT state, count(*) FROM delivery WHERE integration_id = :i GROUP BY state",
        i=uuid.UUID(integration_id),
    )
    return {state: n for state, n in rows}


def burst(api: TestClient, project: str, n: int = BURST) -> None:
    for i in range(n):
        post_release(api, project, version=f"1.{i}.0")


def start_two_workers(stack: Stack) -> None:
    stack.start_beat()
    stack.start_worker(concurrency=4)
    first = stack.worker
    stack.start_worker(concurrency=4, with_sweeper=False)
    # Stack keeps one worker handle; the first one is stopped with the stack through this list.
    stack.extra_workers = [first]  # type: ignore[attr-defined]


def stop_extra_workers(stack: Stack) -> None:
    import os
    import signal

    for proc in getattr(stack, "extra_workers", []):
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def exhausted(stack: Stack, integration_id: str) -> int:
    [(n,)] = sql(
        stack,
        "SELECT count(*) FROM delivery WHERE integration_id = :i AND dead_reason = 'attempts_exhausted'",
        i=uuid.UUID(integration_id),
    )
    return int(n)


@pytest.mark.timeout(600)
def test_a_discord_burst_drains_at_the_webhook_rate_across_two_workers(own_stack: Stack, project):
    """Repro (before, the pacing-off half below): a burst to one Discord webhook from 2 workers was sent at
    once; the webhook (5 per 2 s) answered 429 to all but 5 of each wave, again and again."""
    with DiscordFake(rate=RateLimit(5, 2.0)) as discord:
        start_two_workers(own_stack)
        try:
            with own_stack.client() as api:
                integration = create_integration(
                    api, "discord", project, {"webhook_url": discord.webhook_url(project)}
                )
                burst(api, project, DISCORD_BURST)
                wait_until(
                    lambda: states(own_stack, integration).get("delivered", 0) == DISCORD_BURST,
                    90,
                    f"not all delivered: {states(own_stack, integration)}",
                )
        finally:
            stop_extra_workers(own_stack)
        assert discord.window is not None
        assert discord.window.accepted == DISCORD_BURST
        assert discord.window.refused <= 5, f"{discord.window.refused} 429s"
        assert exhausted(own_stack, integration) == 0


@pytest.mark.timeout(300)
def test_a_burst_paced_a_few_seconds_drains_on_the_workers_own_timers_with_no_sweeper(
    own_stack: Stack, project
):
    """Repro (before): a delivery that had to wait for its slot went to `waiting` and came back only when the
    sweeper woke it, so each destination moved about one delivery per sweep (the pacing bench drained at 0.32 of
    the sum of the limits). A wait of at most `pacing_hold_max_s` is held on the worker's own timer: with no
    beat and no sweeper at all, every delivery of a burst whose last slot is 6 s away (20 events, 5 per 2 s) is
    sent at its slot and none is left `waiting` (before: 1 sent, 19 waiting for a sweeper that never came).
    A send the vendor refuses anyway (a 429 under heavy load) would retry on the sweeper's schedule, which this
    test does not run: such a delivery counts as sent, not as delivered."""
    n = 20
    with DiscordFake(rate=RateLimit(5, 2.0)) as discord:
        own_stack.start_worker(concurrency=4, with_sweeper=False)
        with own_stack.client() as api:
            integration = create_integration(
                api, "discord", project, {"webhook_url": discord.webhook_url(project)}
            )
            burst(api, project, n)

            def attempted() -> list[tuple[str, int]]:
                return sql(
                    own_stack,
                    "SELECT state, attempt_count FROM delivery WHERE integration_id = :i",
                    i=uuid.UUID(integration),
                )

            wait_until(
                lambda: (
                    len(rows := attempted()) == n
                    and all(count >= 1 and state != "sending" for state, count in rows)
                ),
                60,
                lambda: f"not every delivery was sent without a sweeper: {states(own_stack, integration)}",
            )
        assert discord.window is not None
        assert discord.window.refused <= 2, f"{discord.window.refused} 429s"
        final = states(own_stack, integration)
        assert "waiting" not in final, final
        assert final.get("delivered", 0) == discord.window.accepted >= n - discord.window.refused, final


@pytest.mark.timeout(600)
def test_with_pacing_off_the_same_discord_burst_is_answered_with_429s(own_stack: Stack, project):
    """The same burst with pacing off: every worker sends as fast as it can, and the webhook refuses most."""
    own_stack.env["HERALD_PACING_ENABLED"] = "false"
    with DiscordFake(rate=RateLimit(5, 2.0)) as discord:
        start_two_workers(own_stack)
        try:
            with own_stack.client() as api:
                create_integration(api, "discord", project, {"webhook_url": discord.webhook_url(project)})
                burst(api, project)
                assert discord.window is not None
                window = discord.window
                wait_until(lambda: window.refused >= 30, 60, f"only {window.refused} 429s")
        finally:
            stop_extra_workers(own_stack)


@pytest.mark.timeout(600)
def test_a_slack_burst_drains_at_one_per_second_across_two_workers(own_stack: Stack, project):
    """Repro (before): a burst to one Slack webhook (1/s) came back as 429s, each retried on its own schedule."""
    with SlackFake(rate=RateLimit(1, 1.0)) as slack:
        start_two_workers(own_stack)
        try:
            with own_stack.client() as api:
                integration = create_integration(
                    api, "slack", project, {"webhook_url": slack.webhook_url(project)}
                )
                burst(api, project, SLACK_BURST)
                wait_until(
                    lambda: states(own_stack, integration).get("delivered", 0) == SLACK_BURST,
                    90,
                    f"not all delivered: {states(own_stack, integration)}",
                )
        finally:
            stop_extra_workers(own_stack)
        assert slack.window is not None
        assert slack.window.accepted == SLACK_BURST
        assert slack.window.refused <= 5, f"{slack.window.refused} 429s"
        assert exhausted(own_stack, integration) == 0
        # Waiting for the destination is not an attempt: the attempts are the sends, plus the few 429s.
        [(attempts,)] = sql(
            own_stack,
            "SELECT count(*) FROM attempt a JOIN delivery d ON d.id = a.delivery_id WHERE d.integration_id = :i",
            i=uuid.UUID(integration),
        )
        assert attempts == SLACK_BURST + slack.window.refused


@pytest.mark.timeout(600)
def test_a_hanging_destination_holds_at_most_its_bulkhead(own_stack: Stack, receiver: FakeServer, project):
    """Repro (before): with one process, every send to a destination that hangs was in flight at once (up to
    the process's 2000), so the hanging destination held as many of its sends as it was given."""
    own_stack.env["HERALD_BULKHEAD_SENDS_PER_DESTINATION"] = "2"
    hang, healthy = f"/hang/{project}", f"/ok/{project}"
    # The first two sends hang for 8 s, long enough for the healthy destination to finish meanwhile; the other
    # eight answer in 1 s, so the queue behind the bulkhead drains in seconds instead of four more 8 s rounds.
    receiver.script(hang, *[Reply(200, b"ok", delay_s=8 if i < 2 else 1) for i in range(10)])
    own_stack.start_beat()
    own_stack.start_worker(concurrency=4)
    with own_stack.client() as api:
        # 20 s for an 8 s answer: on a loaded machine a starved fake must not turn the slow answer into a
        # timeout and a retry (an attempt more than the 10 this test counts).
        hanging = create_webhook(api, receiver.url(hang), project=project, timeout_s=20)
        ok = create_webhook(api, receiver.url(healthy), project=project)
        for i in range(10):
            post_release(api, project, version=f"2.{i}.0")
        wait_until(
            lambda: states(own_stack, ok).get("delivered", 0) == 10, 30, f"healthy: {states(own_stack, ok)}"
        )
        # The healthy destination is done while the hanging one holds only its 2 places.
        assert len(receiver.requests(hang)) == 2
        [(waits,)] = sql(
            own_stack,
            "SELECT count(*) FROM delivery WHERE integration_id = :i AND state IN ('waiting', 'pending')",
            i=uuid.UUID(hanging),
        )
        assert waits == 8
        wait_until(
            lambda: states(own_stack, hanging).get("delivered", 0) == 10,
            60,
            f"hanging: {states(own_stack, hanging)}",
        )
        [(attempts,)] = sql(
            own_stack,
            "SELECT count(*) FROM attempt a JOIN delivery d ON d.id = a.delivery_id WHERE d.integration_id = :i",
            i=uuid.UUID(hanging),
        )
        outcomes = sql(
            own_stack,
            "SELECT a.outcome, a.error_class, a.status_code, a.duration_ms FROM attempt a "
            "JOIN delivery d ON d.id = a.delivery_id WHERE d.integration_id = :i ORDER BY a.started_at",
            i=uuid.UUID(hanging),
        )
        assert attempts == 10, outcomes  # waiting for a place used no attempt


@pytest.mark.timeout(300)
def test_a_burst_past_the_parking_places_drains_in_the_worker_with_no_sweeper(
    own_stack: Stack, receiver: FakeServer, project
):
    """Repro (before): past its bulkhead (2) and parking places (2), every delivery of a burst to one healthy
    destination went to `waiting` and came back only on the sweeper's rounds: with no beat and no sweeper,
    36 of these 40 stayed `waiting` for good (with them, a 5,000-event burst moved about 580/s against a
    receiver answering in 50 ms). Now they queue in the worker's backlog and take each freed place in turn:
    all 40 sent once, none left waiting, no sweeper needed."""
    own_stack.env.update(
        HERALD_BULKHEAD_SENDS_PER_DESTINATION="2",
        HERALD_BULKHEAD_MAX_SENDS_PER_DESTINATION="2",  # no places earned: the backlog does the work
        HERALD_BULKHEAD_PARKED_PER_DESTINATION="2",
    )
    path = f"/burst/{project}"
    receiver.script(path, *[Reply(200, b"ok", delay_s=0.02) for _ in range(40)])
    own_stack.start_worker(concurrency=4, with_sweeper=False)
    with own_stack.client() as api:
        integration = create_webhook(api, receiver.url(path), project=project)
        events = [{"kind": "release", **release_event(project, version=f"9.{i}.0")} for i in range(40)]
        r = api.post("/v1/events/batch", headers=AUTH, json={"events": events})
        assert r.status_code == 202 and r.json()["data"]["accepted"] == 40, r.text
        wait_until(
            lambda: states(own_stack, integration).get("delivered", 0) == 40,
            60,
            lambda: f"not all delivered without a sweeper: {states(own_stack, integration)}",
        )
    assert len(receiver.requests(path)) == 40
    [(attempts,)] = sql(
        own_stack,
        "SELECT count(*) FROM attempt a JOIN delivery d ON d.id = a.delivery_id WHERE d.integration_id = :i",
        i=uuid.UUID(integration),
    )
    assert attempts == 40  # queued for a place is not an attempt
