"""Microsoft Teams provider against the Teams fake: Workflows (202) and the legacy connector (200 `1`)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from providers._http import HttpClient
from providers.base import Receipt
from providers.teams import TeamsConfig, TeamsProvider
from shared.errors import DeliveryError, InvalidPayload, ProviderUnavailable, RateLimited
from tests.fakes.server import Reply
from tests.fakes.teams import SIG, TeamsFake, card_of, connector_error, workflows_error
from tests.golden.samples import SAMPLES, oversized

MESSAGE = SAMPLES["release_created"]


@pytest.fixture(scope="module")
def teams() -> Iterator[TeamsFake]:
    with TeamsFake() as fake:
        yield fake


@pytest.fixture
def slot() -> str:
    return uuid.uuid4().hex[:10]


def send(config: TeamsConfig, message: Any = MESSAGE) -> Receipt:
    async def run() -> Receipt:
        http = HttpClient.create(allow_cidrs=["127.0.0.1/32"])
        try:
            return await TeamsProvider(http).send(message, config, idempotency_key="d-1", previous_ref=None)
        finally:
            await http.close()

    return asyncio.run(run())


def workflows(teams: TeamsFake, slot: str) -> TeamsConfig:
    return TeamsConfig.model_validate({"webhook_url": teams.workflows_url(slot), "flavor": "workflows"})


def connector(teams: TeamsFake, slot: str) -> TeamsConfig:
    return TeamsConfig.model_validate({"webhook_url": teams.connector_url(slot), "flavor": "connector"})


def test_workflows_accepts_the_adaptive_card_with_202(teams: TeamsFake, slot: str):
    assert send(workflows(teams, slot)).status_code == 202
    [request] = teams.requests(teams.workflows_path(slot))
    card = card_of(json.loads(request.body))
    assert card is not None
    assert card["body"][0]["text"] == MESSAGE.title
    assert card["actions"][0]["url"] == MESSAGE.link


def test_connector_success_is_200_with_body_1(teams: TeamsFake, slot: str):
    assert send(connector(teams, slot)).status_code == 200


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (connector_error(429), RateLimited),  # throttling is a 200 whose body reports the 429
        (connector_error(413), InvalidPayload),
        (connector_error(502), ProviderUnavailable),
        (Reply(200, "Webhook message delivery failed with error: whatever"), ProviderUnavailable),
        (Reply(400, "Summary or Text is required."), InvalidPayload),
        (Reply(500, "oops"), ProviderUnavailable),
    ],
)
def test_connector_failures(teams: TeamsFake, slot: str, reply: Reply, error: type[DeliveryError]):
    teams.script(teams.connector_path(slot), reply)
    with pytest.raises(DeliveryError) as info:
        send(connector(teams, slot))
    assert type(info.value) is error


def test_workflows_any_2xx_is_success_but_an_embedded_429_is_not(teams: TeamsFake, slot: str):
    teams.script(teams.workflows_path(slot), Reply(200, '{"flow":"done"}'))
    assert send(workflows(teams, slot)).status_code == 200
    teams.script(teams.workflows_path(slot), connector_error(429))
    with pytest.raises(RateLimited):
        send(workflows(teams, slot))


def test_workflows_429_retry_after(teams: TeamsFake, slot: str):
    teams.script(teams.workflows_path(slot), workflows_error(429, "Throttled", {"Retry-After": "12"}))
    with pytest.raises(RateLimited) as info:
        send(workflows(teams, slot))
    assert info.value.retry_after_s == 12


def test_oversized_card_stays_under_the_connector_limit(teams: TeamsFake, slot: str):
    assert send(connector(teams, slot), oversized(scale=5)).status_code == 200


@pytest.mark.parametrize(
    ("url", "flavor"),
    [
        ("https://contoso.webhook.office.com/webhookb2/abc@def/IncomingWebhook/x/y", "connector"),
        ("https://outlook.office.com/webhook/abc/IncomingWebhook/x/y", "connector"),
        (
            "https://prod-01.westeurope.logic.azure.com:443/workflows/abc/triggers/manual/paths/invoke?sig=x",
            "workflows",
        ),
        (
            "https://default1234.environment.api.powerplatform.com/powerautomate/automations/direct/x",
            "workflows",
        ),
        ("https://evil-webhook.office.com.example.net/webhookb2/x", "workflows"),
    ],
)
def test_flavor_is_detected_from_the_host(url: str, flavor: str):
    assert TeamsConfig.model_validate({"webhook_url": url}).resolved_flavor() == flavor


def test_sig_never_leaks(teams: TeamsFake, slot: str):
    teams.script(teams.workflows_path(slot), Reply(400, f"bad request, sig={SIG}"))
    with pytest.raises(InvalidPayload) as info:
        send(workflows(teams, slot))
    assert SIG not in (info.value.response_excerpt or "") + str(info.value)
