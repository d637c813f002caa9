"""Slack incoming webhook and bot token providers against the Slack fake (tests/fakes/slack.py)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from providers._http import HttpClient
from providers.base import Receipt
from providers.slack import (
    UNCONFIRMED_POST_SINCE,
    SlackBotConfig,
    SlackBotProvider,
    SlackWebhookConfig,
    SlackWebhookProvider,
    parse_ref,
)
from shared.errors import (
    AuthFailed,
    DeliveryError,
    InvalidPayload,
    ProviderUnavailable,
    RateLimited,
    TargetGone,
    TransportTimeout,
)
from shared.rendering import RenderedMessage
from tests.fakes.server import Reply
from tests.fakes.slack import CHANNEL_ID, SlackFake, api_error, rate_limited, server_error, webhook_error
from tests.golden.samples import SAMPLES, oversized

MESSAGE = SAMPLES["pipeline_failure"]


@pytest.fixture(scope="module")
def slack() -> Iterator[SlackFake]:
    with SlackFake() as fake:
        yield fake


@pytest.fixture
def slot() -> str:
    return uuid.uuid4().hex[:10]


def send(
    provider_cls: Any, config: Any, message: RenderedMessage = MESSAGE, previous_ref: str | None = None
) -> Receipt:
    async def run() -> Receipt:
        http = HttpClient.create(allow_cidrs=["127.0.0.1/32"])
        try:
            return await provider_cls(http).send(
                message, config, idempotency_key="d-1", previous_ref=previous_ref
            )
        finally:
            await http.close()

    return asyncio.run(run())


def hook(slack: SlackFake, slot: str) -> SlackWebhookConfig:
    return SlackWebhookConfig.model_validate({"webhook_url": slack.webhook_url(slot)})


def bot(slack: SlackFake, slot: str, **overrides: Any) -> SlackBotConfig:
    values = {"token": slack.token, "channel": CHANNEL_ID, "api_base_url": slack.api_base(slot), **overrides}
    return SlackBotConfig.model_validate(values)


# incoming webhook


def test_webhook_posts_blocks_and_fallback_text(slack: SlackFake, slot: str):
    receipt = send(SlackWebhookProvider, hook(slack, slot))
    assert (receipt.status_code, receipt.provider_ref) == (200, None)
    [request] = slack.requests(slack.webhook_path(slot))
    body = json.loads(request.body)
    assert body["text"] == MESSAGE.title
    assert body["blocks"][0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": MESSAGE.title, "emoji": True},
    }
    assert request.headers["content-type"].startswith("application/json")


def test_webhook_oversized_message_is_accepted(slack: SlackFake, slot: str):
    """The fake refuses blocks over Slack's limits with invalid_payload: the renderer stays under them."""
    assert send(SlackWebhookProvider, hook(slack, slot), oversized(scale=3)).status_code == 200


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (webhook_error("invalid_payload", 400), InvalidPayload),
        (webhook_error("user_not_found", 400), TargetGone),
        (webhook_error("too_many_attachments", 400), InvalidPayload),
        (webhook_error("action_prohibited", 403), AuthFailed),
        (webhook_error("posting_to_general_channel_denied", 403), AuthFailed),
        (webhook_error("invalid_token", 403), AuthFailed),
        (webhook_error("channel_not_found", 404), TargetGone),
        (webhook_error("no_active_hooks", 404), TargetGone),
        (webhook_error("channel_is_archived", 410), TargetGone),
        (webhook_error("team_disabled", 410), TargetGone),
        (webhook_error("rollup_error", 500), ProviderUnavailable),
        (server_error(), ProviderUnavailable),
        (webhook_error("something_new", 400), InvalidPayload),  # unknown string: the status decides
        (webhook_error("something_new", 404), TargetGone),
        (Reply(200, "not ok"), ProviderUnavailable),  # only `200 ok` is success
        (Reply(204, ""), ProviderUnavailable),
        (webhook_error("channel_not_found", 200), TargetGone),  # a known error string wins over a 200
    ],
)
def test_webhook_errors_are_classified(slack: SlackFake, slot: str, reply: Reply, error: type[DeliveryError]):
    slack.script(slack.webhook_path(slot), reply)
    with pytest.raises(DeliveryError) as info:
        send(SlackWebhookProvider, hook(slack, slot))
    assert type(info.value) is error
    assert info.value.status_code == reply.status


def test_webhook_429_carries_retry_after(slack: SlackFake, slot: str):
    slack.script(slack.webhook_path(slot), rate_limited(7))
    with pytest.raises(RateLimited) as info:
        send(SlackWebhookProvider, hook(slack, slot))
    assert info.value.retry_after_s == 7


def test_webhook_url_never_leaks_into_errors(slack: SlackFake, slot: str):
    url = slack.webhook_url(slot)
    slack.script(
        slack.webhook_path(slot), Reply(400, f"bad request for {url} and {slack.webhook_path(slot)}")
    )
    with pytest.raises(InvalidPayload) as info:
        send(SlackWebhookProvider, hook(slack, slot))
    secret_tail = slack.webhook_path(slot)
    assert secret_tail not in (info.value.response_excerpt or "") and secret_tail not in str(info.value)


def test_webhook_config_validation_and_preview():
    with pytest.raises(ValueError):
        SlackWebhookConfig.model_validate({"webhook_url": "hooks.slack.com/services/x"})
    with pytest.raises(ValueError):
        SlackWebhookConfig.model_validate({"webhook_url": "https://x.example", "unknown": 1})
    config = SlackWebhookConfig.model_validate({"webhook_url": "https://hooks.slack.com/services/T/B/secret"})
    preview = SlackWebhookProvider(http=None).preview(MESSAGE, config)  # type: ignore[arg-type]
    assert "secret" not in json.dumps(preview) and preview["blocks"]


# bot token


def test_bot_posts_and_returns_channel_ts_ref(slack: SlackFake, slot: str):
    receipt = send(SlackBotProvider, bot(slack, slot))
    assert receipt.provider_ref is not None
    channel, ts = parse_ref(receipt.provider_ref)  # type: ignore[misc]
    assert channel == CHANNEL_ID and (channel, ts) in slack.messages
    [request] = slack.requests(f"/{slot}/api/chat.postMessage")
    assert request.headers["authorization"] == f"Bearer {slack.token}"
    body = json.loads(request.body)
    assert body["channel"] == CHANNEL_ID and body["unfurl_links"] is False and body["blocks"]


def test_bot_channel_name_gets_the_id_in_the_ref(slack: SlackFake, slot: str):
    receipt = send(SlackBotProvider, bot(slack, slot, channel="#deploys"))
    assert receipt.provider_ref is not None and receipt.provider_ref.startswith(CHANNEL_ID + ":")


def test_bot_edits_in_place_with_previous_ref(slack: SlackFake, slot: str):
    first = send(SlackBotProvider, bot(slack, slot))
    second = send(
        SlackBotProvider, bot(slack, slot), SAMPLES["pipeline_success"], previous_ref=first.provider_ref
    )
    assert second.provider_ref == first.provider_ref
    [update] = slack.requests(f"/{slot}/api/chat.update")
    body = json.loads(update.body)
    assert f"{body['channel']}:{body['ts']}" == first.provider_ref
    assert "succeeded" in body["text"]
    assert len(slack.requests(f"/{slot}/api/chat.postMessage")) == 1


def test_bot_posts_anew_when_the_old_message_is_gone(slack: SlackFake, slot: str):
    receipt = send(SlackBotProvider, bot(slack, slot), previous_ref=f"{CHANNEL_ID}:1600000000.000001")
    assert len(slack.requests(f"/{slot}/api/chat.update")) == 1  # message_not_found
    assert len(slack.requests(f"/{slot}/api/chat.postMessage")) == 1
    assert receipt.provider_ref != f"{CHANNEL_ID}:1600000000.000001"


@pytest.mark.parametrize(
    ("config_overrides", "previous_ref"),
    [
        ({"edit_in_place": False}, f"{CHANNEL_ID}:1700000000.000001"),
        ({}, "garbage"),
        ({}, "C0OTHERCHAN:1700000000.000001"),  # the channel was changed since: post in the new one
    ],
)
def test_bot_does_not_edit(slack: SlackFake, slot: str, config_overrides: dict[str, Any], previous_ref: str):
    send(SlackBotProvider, bot(slack, slot, **config_overrides), previous_ref=previous_ref)
    assert slack.requests(f"/{slot}/api/chat.update") == []
    assert len(slack.requests(f"/{slot}/api/chat.postMessage")) == 1


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (api_error("invalid_auth"), AuthFailed),
        (api_error("token_revoked"), AuthFailed),
        (api_error("missing_scope"), AuthFailed),
        (api_error("channel_not_found"), TargetGone),
        (api_error("is_archived"), TargetGone),
        (api_error("not_in_channel"), TargetGone),
        (api_error("invalid_blocks"), InvalidPayload),
        (api_error("msg_too_long"), InvalidPayload),
        (api_error("some_future_error"), InvalidPayload),
        (api_error("internal_error"), ProviderUnavailable),
        (api_error("service_unavailable"), ProviderUnavailable),
        (api_error("request_timeout"), ProviderUnavailable),
        (api_error("fatal_error", 500), ProviderUnavailable),
        (Reply(200, "<html>not json</html>"), ProviderUnavailable),
    ],
)
def test_bot_ok_false_on_http_200_is_a_failure(
    slack: SlackFake, slot: str, reply: Reply, error: type[DeliveryError]
):
    slack.script(f"/{slot}/api/chat.postMessage", reply)
    with pytest.raises(DeliveryError) as info:
        send(SlackBotProvider, bot(slack, slot))
    assert type(info.value) is error
    assert slack.token not in str(info.value) + (info.value.response_excerpt or "")


def test_bot_ratelimited_honours_retry_after(slack: SlackFake, slot: str):
    slack.script(f"/{slot}/api/chat.postMessage", rate_limited(30, api=True))
    with pytest.raises(RateLimited) as info:
        send(SlackBotProvider, bot(slack, slot))
    assert info.value.retry_after_s == 30
    # `rate_limited` ("app posted too many messages") comes on HTTP 200 without a hint
    slack.script(f"/{slot}/api/chat.postMessage", api_error("rate_limited"))
    with pytest.raises(RateLimited) as info:
        send(SlackBotProvider, bot(slack, slot))
    assert info.value.retry_after_s is None


def test_bot_config_validation_and_preview():
    for bad in (
        {"token": "not-a-token", "channel": "C1"},
        {"token": "xoxb-1-2", "channel": "has space"},
        {"token": "xoxb-1-2", "channel": "C1", "api_base_url": "ftp://x"},
    ):
        with pytest.raises(ValueError):
            SlackBotConfig.model_validate(bad)
    config = SlackBotConfig.model_validate({"token": "xoxb-1-secrettoken", "channel": "C0123ABCD"})
    preview = SlackBotProvider(http=None).preview(MESSAGE, config)  # type: ignore[arg-type]
    assert preview["channel"] == "C0123ABCD" and "secrettoken" not in json.dumps(preview)
    assert parse_ref("C0123ABCD:1700000000.000100") == ("C0123ABCD", "1700000000.000100")
    assert parse_ref("nonsense") is None and parse_ref(None) is None


def test_bot_thread_replies_post_each_edit_in_the_thread_too(slack: SlackFake, slot: str):
    """Issue 11: the integration setting `thread_replies` keeps a history under the edited message (before:
    no such setting, the config refused it)."""
    config = bot(slack, slot, thread_replies=True)
    first = send(SlackBotProvider, config)
    second = send(SlackBotProvider, config, SAMPLES["pipeline_success"], previous_ref=first.provider_ref)
    assert second.provider_ref == first.provider_ref  # the root stays the lifecycle's message
    [update] = slack.requests(f"/{slot}/api/chat.update")
    root_post, reply = (json.loads(r.body) for r in slack.requests(f"/{slot}/api/chat.postMessage"))
    assert "thread_ts" not in root_post
    assert reply["thread_ts"] == json.loads(update.body)["ts"] and "succeeded" in reply["text"]
    send(SlackBotProvider, bot(slack, slot), SAMPLES["pipeline_success"], previous_ref=first.provider_ref)
    assert len(slack.requests(f"/{slot}/api/chat.postMessage")) == 2  # off by default


# a post whose answer was lost: the retry finds it instead of posting a second root


def attempt(config: SlackBotConfig, delivery_id: str, progress: dict[str, str] | None = None) -> Receipt:
    async def run() -> Receipt:
        http = HttpClient.create(allow_cidrs=["127.0.0.1/32"])
        try:
            return await SlackBotProvider(http).send(
                MESSAGE, config, idempotency_key=delivery_id, previous_ref=None, progress=progress
            )
        finally:
            await http.close()

    return asyncio.run(run())


def timed_out_post(slack: SlackFake, config: SlackBotConfig, delivery_id: str) -> dict[str, str]:
    """The first attempt: Slack posts the message but answers after our timeout; returns its progress."""
    slack.slow_posts, slack.slow_post_delay_s = 1, config.timeout_s + 1.5
    with pytest.raises(TransportTimeout) as caught:
        attempt(config, delivery_id)
    assert UNCONFIRMED_POST_SINCE in caught.value.target_progress
    return caught.value.target_progress


def in_channel(slack: SlackFake, delivery_id: str) -> list[str]:
    return [
        ts
        for (channel, ts), body in list(slack.messages.items())
        if channel == CHANNEL_ID
        and (body.get("metadata") or {}).get("event_payload", {}).get("delivery_id") == delivery_id
    ]


def test_a_retry_after_a_timed_out_post_that_landed_adopts_it_instead_of_posting_again(
    slack: SlackFake, slot: str
):
    """Repro (before): chat.postMessage has no idempotency key; a post answered after our timeout had landed, and
    the retry posted the incident's root a second time (two messages in the channel, edits going to one)."""
    config = bot(slack, slot, timeout_s=1)
    delivery_id = str(uuid.uuid4())
    progress = timed_out_post(slack, config, delivery_id)
    [landed] = in_channel(slack, delivery_id)
    receipt = attempt(config, delivery_id, progress)
    assert receipt.provider_ref == f"{CHANNEL_ID}:{landed}"
    assert in_channel(slack, delivery_id) == [landed]  # still one message


def test_the_lookup_pages_through_the_history_to_find_the_post(slack: SlackFake, slot: str):
    config = bot(slack, slot, timeout_s=1)
    delivery_id = str(uuid.uuid4())
    progress = timed_out_post(slack, config, delivery_id)
    for _ in range(5):  # newer messages in the channel: the landed post is on the third page of two
        attempt(config, str(uuid.uuid4()))
    slack.history_page_size = 2
    try:
        receipt = attempt(config, delivery_id, progress)
    finally:
        slack.history_page_size = 100
    assert len(in_channel(slack, delivery_id)) == 1
    assert receipt.provider_ref == f"{CHANNEL_ID}:{in_channel(slack, delivery_id)[0]}"


def test_without_the_history_scope_the_retry_posts_again_rather_than_lose_the_message(
    slack: SlackFake, slot: str
):
    config = bot(slack, slot, timeout_s=1)
    delivery_id = str(uuid.uuid4())
    progress = timed_out_post(slack, config, delivery_id)
    slack.history_error = "missing_scope"
    try:
        receipt = attempt(config, delivery_id, progress)
    finally:
        slack.history_error = None
    assert receipt.provider_ref is not None
    assert len(in_channel(slack, delivery_id)) == 2  # a duplicate, never a lost incident message


def test_every_bot_post_names_its_delivery_in_the_message_metadata(slack: SlackFake, slot: str):
    delivery_id = str(uuid.uuid4())
    attempt(bot(slack, slot), delivery_id)
    assert len(in_channel(slack, delivery_id)) == 1
