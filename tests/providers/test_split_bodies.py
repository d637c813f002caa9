"""Response bodies are read whole (up to MAX_RESPONSE_BYTES), however many writes the server sends them in.

Repro before the fix: `resp.content.read(MAX_RESPONSE_BYTES)` returns what the first chunk delivered, so a JSON
answer written in two pieces was cut in half: Slack's chat.postMessage success became "answer is not a JSON
object" (retried, so the message was posted twice), and Discord, PagerDuty and SES lost the message reference.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from providers._http import MAX_RESPONSE_BYTES, HttpClient, HttpResponse
from providers.base import Provider, Receipt
from providers.discord import DiscordConfig, DiscordProvider
from providers.email_ses import SEND_PATH, SesConfig, SesProvider
from providers.pagerduty import PagerDutyConfig, PagerDutyProvider
from providers.slack import SlackBotConfig, SlackBotProvider
from tests.fakes.server import FakeServer, Reply
from tests.golden.samples import SAMPLES

MESSAGE = SAMPLES["pipeline_failure"]


@pytest.fixture(scope="module")
def server() -> Iterator[FakeServer]:
    with FakeServer(split_writes=2, split_pause_s=0.05) as s:
        yield s


def send(provider_cls: type[Provider[Any]], config: Any, previous_ref: str | None = None) -> Receipt:
    async def run() -> Receipt:
        http = HttpClient.create(allow_cidrs=["127.0.0.1/32"])
        try:
            return await provider_cls(http).send(
                MESSAGE, config, idempotency_key="d-1", previous_ref=previous_ref
            )
        finally:
            await http.close()

    return asyncio.run(run())


def json_reply(status: int, body: dict[str, Any]) -> Reply:
    return Reply(status, orjson.dumps(body), content_type="application/json")


def test_slack_post_message_answer_in_two_writes_is_one_success_with_its_ts(server: FakeServer):
    server.script(
        "/split-slack/api/chat.postMessage",
        json_reply(200, {"ok": True, "channel": "C0123ABCD", "ts": "1700000000.000100", "message": {}}),
    )
    config = SlackBotConfig.model_validate(
        {"token": "xoxb-1-2-abc", "channel": "C0123ABCD", "api_base_url": server.url("/split-slack/api")}
    )
    receipt = send(SlackBotProvider, config)
    assert receipt.provider_ref == "C0123ABCD:1700000000.000100"
    assert len(server.requests("/split-slack/api/chat.postMessage")) == 1


def test_discord_message_id_survives_a_split_answer(server: FakeServer):
    path = "/api/webhooks/123456789012/split-token-abcdef"
    server.script(path, json_reply(200, {"id": "112233445566778899", "channel_id": "1"}))
    config = DiscordConfig.model_validate({"webhook_url": server.url(path)})
    assert send(DiscordProvider, config).provider_ref == "112233445566778899"


def test_pagerduty_dedup_key_comes_from_a_split_answer(server: FakeServer):
    server.script(
        "/split-pd/v2/enqueue",
        json_reply(
            202, {"status": "success", "message": "Event processed", "dedup_key": "from-pagerduty-42"}
        ),
    )
    config = PagerDutyConfig.model_validate(
        {"routing_key": "R0UT1NGKEY0000000000000000000001", "events_url": server.url("/split-pd/v2/enqueue")}
    )
    assert send(PagerDutyProvider, config).provider_ref == "from-pagerduty-42"


def test_ses_message_id_comes_from_a_split_answer(server: FakeServer):
    server.script("/split-ses" + SEND_PATH, json_reply(200, {"MessageId": "0100018c-split-answer"}))
    config = SesConfig.model_validate(
        {
            "access_key_id": "AKIAEXAMPLE0000000",
            "secret_access_key": "secret/example/key",
            "region": "eu-west-1",
            "endpoint_url": server.url("/split-ses"),
            "from_address": "herald@example.com",
            "to": ["ana@example.com"],
        }
    )
    # A pipeline run is a lifecycle: the reference is the Message-ID SES gives the mail (its email thread's root).
    assert MESSAGE.lifecycle_key
    assert send(SesProvider, config).provider_ref == "<0100018c-split-answer@eu-west-1.amazonses.com>"


def _request(url: str) -> HttpResponse:
    async def run() -> HttpResponse:
        http = HttpClient.create(allow_cidrs=["127.0.0.1/32"])
        try:
            return await http.request("GET", url, provider="webhook", timeout_s=5)
        finally:
            await http.close()

    return asyncio.run(run())


def test_body_in_many_writes_is_read_whole(server: FakeServer):
    body = bytes(range(256)) * 40  # 10 KiB
    server.script("/many", Reply(200, body, split_writes=5))
    assert _request(server.url("/many")).body == body


def test_oversized_body_is_cut_at_the_limit_not_an_error(server: FakeServer):
    body = b"x" * (MAX_RESPONSE_BYTES + 40_000)
    server.script("/huge", Reply(200, body, split_writes=4))
    response = _request(server.url("/huge"))
    assert response.status == 200
    assert response.body == body[:MAX_RESPONSE_BYTES]
