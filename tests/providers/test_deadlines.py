"""One deadline per attempt (`send(..., deadline=)`): vendor fallbacks share it, and `max_attempt_s` declares it.

The fake answers slowly enough that each request on its own fits its `timeout_s`, but the fallback pair does not
fit the attempt's deadline. Repro before the fix: `send` had no deadline; Slack's chat.update -> chat.postMessage
and Discord's PATCH -> POST each got a full `timeout_s`, so an attempt could last twice its timeout, outlive the
worker's allowance (timeout_s + guard) and end as `internal_error` after the message was posted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from providers._http import HttpClient
from providers.apns import ApnsConfig
from providers.base import Provider, Receipt, max_attempt_s
from providers.discord import DiscordConfig, DiscordProvider
from providers.slack import SlackBotConfig, SlackBotProvider
from providers.webhook import WebhookConfig, WebhookProvider
from shared.errors import TransportTimeout
from tests.fakes.apns import generated_p8
from tests.fakes.server import FakeServer, Reply
from tests.golden.samples import SAMPLES

MESSAGE = SAMPLES["pipeline_success"]
CHANNEL = "C0123ABCD"
TS = "1700000000.000100"
#: each request's own timeout; every slow answer below fits in it
TIMEOUT_S = 1.5


@pytest.fixture(scope="module")
def server() -> Iterator[FakeServer]:
    with FakeServer() as s:
        yield s


def send(
    provider_cls: type[Provider[Any]], config: Any, *, previous_ref: str | None, deadline_in_s: float | None
) -> Receipt:
    async def run() -> Receipt:
        http = HttpClient.create(allow_cidrs=["127.0.0.1/32"])
        try:
            deadline = None if deadline_in_s is None else time.monotonic() + deadline_in_s
            return await provider_cls(http).send(
                MESSAGE, config, idempotency_key="d-1", previous_ref=previous_ref, deadline=deadline
            )
        finally:
            await http.close()

    return asyncio.run(run())


def json_reply(body: dict[str, Any], *, status: int = 200, delay_s: float = 0.0) -> Reply:
    return Reply(status, orjson.dumps(body), content_type="application/json", delay_s=delay_s)


def slack_bot(server: FakeServer, slot: str) -> SlackBotConfig:
    return SlackBotConfig.model_validate(
        {
            "token": "xoxb-1-2-abc",
            "channel": CHANNEL,
            "api_base_url": server.url(f"/{slot}/api"),
            "timeout_s": TIMEOUT_S,
        }
    )


def test_slack_post_after_a_failed_update_gets_only_what_is_left(server: FakeServer):
    server.script("/s1/api/chat.update", json_reply({"ok": False, "error": "message_not_found"}, delay_s=0.6))
    server.script(
        "/s1/api/chat.postMessage", json_reply({"ok": True, "channel": CHANNEL, "ts": TS}, delay_s=1.0)
    )
    with pytest.raises(TransportTimeout):
        send(SlackBotProvider, slack_bot(server, "s1"), previous_ref=f"{CHANNEL}:{TS}", deadline_in_s=1.2)
    assert len(server.requests("/s1/api/chat.update")) == 1


def test_slack_makes_no_fallback_request_once_the_deadline_passed(server: FakeServer):
    server.script("/s2/api/chat.update", json_reply({"ok": False, "error": "message_not_found"}, delay_s=1.3))
    with pytest.raises(TransportTimeout):
        send(SlackBotProvider, slack_bot(server, "s2"), previous_ref=f"{CHANNEL}:{TS}", deadline_in_s=1.0)
    assert server.requests("/s2/api/chat.postMessage") == []


def test_slack_fallback_within_the_deadline_posts(server: FakeServer):
    """The control: with time to spare the fallback posts and the new message's ref comes back."""
    server.script("/s3/api/chat.update", json_reply({"ok": False, "error": "message_not_found"}, delay_s=0.2))
    server.script(
        "/s3/api/chat.postMessage", json_reply({"ok": True, "channel": CHANNEL, "ts": TS}, delay_s=0.2)
    )
    receipt = send(
        SlackBotProvider, slack_bot(server, "s3"), previous_ref=f"{CHANNEL}:1.2", deadline_in_s=3.0
    )
    assert receipt.provider_ref == f"{CHANNEL}:{TS}"


def test_discord_post_after_a_failed_patch_gets_only_what_is_left(server: FakeServer):
    base = "/api/webhooks/123456789012/deadline-token-abc"
    server.script(
        f"{base}/messages/112233445566778899",
        json_reply({"message": "Unknown Message", "code": 10008}, status=404, delay_s=0.6),
    )
    server.script(base, json_reply({"id": "998877665544332211"}, delay_s=1.0))
    config = DiscordConfig.model_validate({"webhook_url": server.url(base), "timeout_s": TIMEOUT_S})
    with pytest.raises(TransportTimeout):
        send(DiscordProvider, config, previous_ref="112233445566778899", deadline_in_s=1.2)


def test_a_deadline_already_passed_sends_nothing(server: FakeServer):
    config = WebhookConfig.model_validate({"url": server.url("/late"), "timeout_s": TIMEOUT_S})
    with pytest.raises(TransportTimeout, match="deadline"):
        send(WebhookProvider, config, previous_ref=None, deadline_in_s=-0.1)
    assert server.requests("/late") == []


def test_without_a_deadline_the_config_timeout_bounds_the_attempt(server: FakeServer):
    server.script("/slow", Reply(200, b"late", delay_s=1.0))
    config = WebhookConfig.model_validate({"url": server.url("/slow"), "timeout_s": 0.3})
    with pytest.raises(TransportTimeout):
        send(WebhookProvider, config, previous_ref=None, deadline_in_s=None)


def test_max_attempt_s():
    assert max_attempt_s(WebhookConfig.model_validate({"url": "https://example.com/h", "timeout_s": 7})) == 7
    p8, _ = generated_p8()
    apns = ApnsConfig.model_validate(
        {"team_id": "TEAM123456", "key_id": "KEY7890ABC", "private_key": p8, "topic": "a.b", "timeout_s": 10}
    )
    # several requests per attempt (one per token, maybe a re-authentication): more than one timeout
    assert max_attempt_s(apns) > 10
