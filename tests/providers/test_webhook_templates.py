"""Generic webhook: user payload templates on the wire, and signing-secret rotation (both secrets for 24 h)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import standardwebhooks
from pydantic import SecretStr

from providers._http import HttpClient
from providers.base import Receipt, mask_config, plain_config
from providers.webhook import ROTATION_OVERLAP_S, WebhookConfig, WebhookProvider
from shared.errors import InvalidPayload
from shared.rendering import RenderedMessage
from tests.data import seed_003_payloads
from tests.fakes.server import FakeServer
from tests.fakes.webhook import webhook_receiver
from tests.golden.samples import SAMPLES

OLD = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NEW = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3"  # base64 of 30 bytes


@pytest.fixture(scope="module")
def receiver() -> Iterator[FakeServer]:
    with webhook_receiver() as server:
        yield server


@pytest.fixture
def path() -> str:
    return f"/hook/{uuid.uuid4().hex}"


def send(config: WebhookConfig, message: RenderedMessage = SAMPLES["pipeline_failure"]) -> Receipt:
    async def run() -> Receipt:
        http = HttpClient.create(allow_cidrs=["127.0.0.1/32"])
        try:
            return await WebhookProvider(http).send(
                message, config, idempotency_key="msg_1", previous_ref=None
            )
        finally:
            await http.close()

    return asyncio.run(run())


def test_template_body_goes_on_the_wire_signed(receiver: FakeServer, path: str):
    template = '{"content": "{{ devtronAppName }} {{ eventType }}: {{ title }}", "sev": "{{ severity }}",}'
    config = WebhookConfig.model_validate(
        {"url": receiver.url(path), "template": template, "signing_secret": OLD}
    )
    send(config)
    [request] = receiver.requests(path)
    body = standardwebhooks.Webhook(OLD).verify(request.body, request.headers)
    assert body == {
        "content": "checkout pipeline.failure: CD pipeline deploy-prod for checkout FAILED",
        "sev": "error",
    }


def test_seed_003_slack_payload_as_template(receiver: FakeServer, path: str):
    source = seed_003_payloads()["Slack Webhook Payload"]
    send(WebhookConfig.model_validate({"url": receiver.url(path), "template": source}))
    body = json.loads(receiver.requests(path)[0].body)
    assert "*App* : checkout" in body["blocks"][0]["text"]["text"]


def test_a_template_that_fails_at_send_is_invalid_payload(receiver: FakeServer, path: str):
    # Within the limits on the sample values it is checked with when saved; over them for an error event.
    template = '{"a": "{{ title * (100000 if severity == \'error\' else 1) }}"}'
    config = WebhookConfig.model_validate({"url": receiver.url(path), "template": template})
    with pytest.raises(InvalidPayload) as info:
        send(config)
    assert "template_limit" in info.value.detail
    assert receiver.requests(path) == []
    # A template that fails on the sample for another reason may well render for real events: saved.
    config = WebhookConfig.model_validate(
        {"url": receiver.url(path), "template": '{"a": "{{ data.app.upper() }} {{ 1 / 0 }}"}'}
    )
    with pytest.raises(InvalidPayload) as info:
        send(config)
    assert "template_render" in info.value.detail


def _rotated(rotated_at: datetime) -> WebhookConfig:
    old = WebhookConfig.model_validate({"url": "https://hooks.example/x", "signing_secret": OLD})
    new = WebhookConfig.model_validate({"url": "https://hooks.example/x", "signing_secret": NEW})
    return WebhookProvider.on_config_update(old, new, now=rotated_at)


def test_on_config_update_keeps_the_old_secret_with_its_time():
    now = datetime(2025, 3, 14, 12, 0, tzinfo=UTC)
    config = _rotated(now)
    assert config.previous_signing_secret is not None
    assert config.previous_signing_secret.get_secret_value() == OLD
    assert config.signing_secret_rotated_at == now
    # Re-saving with the same secret keeps the rotation in progress; the stored form round-trips.
    again = WebhookProvider.on_config_update(
        config,
        config.model_copy(update={"previous_signing_secret": None, "signing_secret_rotated_at": None}),
        now=now + timedelta(hours=1),
    )
    assert again.signing_secret_rotated_at == now
    assert WebhookConfig.model_validate(json.loads(json.dumps(plain_config(again), default=str))) == again
    assert mask_config(again)["previous_signing_secret"] == "********"
    # No secret before: nothing to keep.
    plain = WebhookConfig.model_validate({"url": "https://hooks.example/x"})
    first = WebhookConfig.model_validate({"url": "https://hooks.example/x", "signing_secret": NEW})
    assert WebhookProvider.on_config_update(plain, first, now=now).previous_signing_secret is None


def test_both_secrets_sign_during_the_overlap(receiver: FakeServer, path: str):
    config = _rotated(datetime.now(UTC) - timedelta(hours=23)).model_copy(
        update={"url": SecretStr(receiver.url(path))}
    )
    send(config)
    [request] = receiver.requests(path)
    signatures = request.headers["webhook-signature"].split(" ")
    assert len(signatures) == 2 and all(s.startswith("v1,") for s in signatures)
    # A receiver on either secret verifies the same message.
    for secret in (OLD, NEW):
        assert (
            standardwebhooks.Webhook(secret).verify(request.body, request.headers)["type"]
            == "pipeline.failure"
        )


def test_only_the_new_secret_signs_after_the_overlap(receiver: FakeServer, path: str):
    rotated_at = datetime.now(UTC) - timedelta(seconds=ROTATION_OVERLAP_S + 60)
    config = _rotated(rotated_at).model_copy(update={"url": SecretStr(receiver.url(path))})
    send(config)
    [request] = receiver.requests(path)
    assert " " not in request.headers["webhook-signature"]
    standardwebhooks.Webhook(NEW).verify(request.body, request.headers)
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(OLD).verify(request.body, request.headers)


def test_rotation_fields_are_validated():
    with pytest.raises(ValueError, match="signing_secret_rotated_at"):
        WebhookConfig.model_validate(
            {"url": "https://x.example", "signing_secret": NEW, "previous_signing_secret": OLD}
        )
    with pytest.raises(ValueError):
        WebhookConfig.model_validate(
            {
                "url": "https://x.example",
                "signing_secret": NEW,
                "previous_signing_secret": "nope",
                "signing_secret_rotated_at": time.time(),
            }
        )
