"""Discord webhook provider against the Discord fake (tests/fakes/discord.py)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from providers._http import HttpClient
from providers.base import Receipt
from providers.discord import DiscordConfig, DiscordProvider
from shared.errors import (
    AuthFailed,
    DeliveryError,
    InvalidPayload,
    ProviderUnavailable,
    RateLimited,
    TargetGone,
)
from shared.rendering import RenderedMessage
from tests.fakes.discord import DiscordFake, error, rate_limited, unknown_webhook
from tests.fakes.server import Reply
from tests.golden.samples import SAMPLES, oversized

MESSAGE = SAMPLES["pipeline_failure"]


@pytest.fixture(scope="module")
def discord() -> Iterator[DiscordFake]:
    with DiscordFake() as fake:
        yield fake


@pytest.fixture
def slot() -> str:
    return uuid.uuid4().hex[:10]


def send(
    config: DiscordConfig, message: RenderedMessage = MESSAGE, previous_ref: str | None = None
) -> Receipt:
    async def run() -> Receipt:
        http = HttpClient.create(allow_cidrs=["127.0.0.1/32"])
        try:
            return await DiscordProvider(http).send(
                message, config, idempotency_key="d-1", previous_ref=previous_ref
            )
        finally:
            await http.close()

    return asyncio.run(run())


def config(discord: DiscordFake, slot: str, **overrides: Any) -> DiscordConfig:
    return DiscordConfig.model_validate({"webhook_url": discord.webhook_url(slot), **overrides})


def test_execute_waits_and_keeps_the_message_id(discord: DiscordFake, slot: str):
    receipt = send(config(discord, slot, username="Herald", avatar_url="https://cdn.example/h.png"))
    assert receipt.provider_ref in discord.messages
    [request] = discord.requests(discord.webhook_path(slot))
    assert (request.method, request.query) == ("POST", "wait=true")
    body = json.loads(request.body)
    assert body["username"] == "Herald" and body["avatar_url"] == "https://cdn.example/h.png"
    assert body["allowed_mentions"] == {"parse": []}
    assert body["embeds"][0]["title"] == MESSAGE.title


def test_thread_id_is_kept_on_execute_and_edit(discord: DiscordFake, slot: str):
    cfg = DiscordConfig.model_validate({"webhook_url": discord.webhook_url(slot) + "?thread_id=1234567890"})
    first = send(cfg)
    send(cfg, SAMPLES["pipeline_success"], previous_ref=first.provider_ref)
    [posted] = discord.requests(discord.webhook_path(slot))
    [edited] = discord.requests(f"{discord.webhook_path(slot)}/messages/{first.provider_ref}")
    assert posted.query == "wait=true&thread_id=1234567890"
    assert edited.query == "thread_id=1234567890"


def test_edit_in_place_patches_the_earlier_message(discord: DiscordFake, slot: str):
    first = send(config(discord, slot, username="Herald"))
    second = send(config(discord, slot, username="Herald"), SAMPLES["pipeline_success"], first.provider_ref)
    assert second.provider_ref == first.provider_ref
    [edited] = discord.requests(f"{discord.webhook_path(slot)}/messages/{first.provider_ref}")
    body = json.loads(edited.body)
    assert edited.method == "PATCH" and "username" not in body  # name and avatar are fixed at creation
    assert "succeeded" in discord.messages[first.provider_ref]["embeds"][0]["title"]


def test_deleted_message_means_a_new_post(discord: DiscordFake, slot: str):
    receipt = send(config(discord, slot), previous_ref="1234567890123")
    assert len(discord.requests(f"{discord.webhook_path(slot)}/messages/1234567890123")) == 1  # 404 10008
    assert receipt.provider_ref in discord.messages and receipt.provider_ref != "1234567890123"


def test_edit_in_place_can_be_turned_off(discord: DiscordFake, slot: str):
    first = send(config(discord, slot))
    send(config(discord, slot, edit_in_place=False), previous_ref=first.provider_ref)
    assert len(discord.requests(discord.webhook_path(slot))) == 2


def test_oversized_message_passes_the_fakes_limits(discord: DiscordFake, slot: str):
    assert send(config(discord, slot), oversized(scale=3)).status_code == 200


def test_429_uses_the_longest_hint(discord: DiscordFake, slot: str):
    discord.script(discord.webhook_path(slot), rate_limited(2.5, header_s=2))
    with pytest.raises(RateLimited) as info:
        send(config(discord, slot))
    assert info.value.retry_after_s == 2.5
    assert info.value.status_code == 429


@pytest.mark.parametrize(
    ("reply", "error_cls"),
    [
        (unknown_webhook(), TargetGone),
        (error(401, 50027, "Invalid Webhook Token"), AuthFailed),
        (error(403, 50013, "Missing Permissions"), AuthFailed),
        (error(400, 50035, "Invalid Form Body"), InvalidPayload),
        (error(400, 50006, "Cannot send an empty message"), InvalidPayload),
        (error(413, 40005, "Request entity too large"), InvalidPayload),
        (error(502, 0, "502 Bad Gateway"), ProviderUnavailable),
        (Reply(503, "upstream connect error"), ProviderUnavailable),
    ],
)
def test_errors_are_classified(discord: DiscordFake, slot: str, reply: Reply, error_cls: type[DeliveryError]):
    discord.script(discord.webhook_path(slot), reply)
    with pytest.raises(DeliveryError) as info:
        send(config(discord, slot))
    assert type(info.value) is error_cls
    token = discord.webhook_path(slot).rsplit("/", 1)[1]
    assert token not in str(info.value) and token not in (info.value.response_excerpt or "")


def test_unknown_webhook_from_the_fake_itself_is_gone(discord: DiscordFake):
    cfg = DiscordConfig.model_validate(
        {"webhook_url": discord.url("/api/webhooks/99999999/not-a-known-token")}
    )
    with pytest.raises(TargetGone) as info:
        send(cfg)
    assert "10015" in info.value.detail


def test_wrong_token_is_auth_failed(discord: DiscordFake, slot: str):
    webhook_id, _ = discord.add_webhook(slot)
    cfg = DiscordConfig.model_validate(
        {"webhook_url": discord.url(f"/api/webhooks/{webhook_id}/wrong-token-value")}
    )
    with pytest.raises(AuthFailed):
        send(cfg)


@pytest.mark.parametrize(
    "url",
    [
        "https://discord.com/api/webhooks/abc/token-token-token",
        "https://discord.com/api/channels/123456/messages",
        "https://discord.com/api/webhooks/123456/tokentokentoken?wait=false",
        "discord.com/api/webhooks/123456/tokentokentoken",
    ],
)
def test_config_refuses_non_webhook_urls(url: str):
    with pytest.raises(ValueError):
        DiscordConfig.model_validate({"webhook_url": url})


def test_preview_has_no_token():
    cfg = DiscordConfig.model_validate(
        {"webhook_url": "https://discord.com/api/webhooks/123456/s3cr3tt0k3nvalue"}
    )
    preview = DiscordProvider(http=None).preview(MESSAGE, cfg)  # type: ignore[arg-type]
    assert "s3cr3tt0k3nvalue" not in json.dumps(preview) and preview["embeds"]
