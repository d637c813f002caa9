"""SES v2 provider against a fake endpoint that verifies the SigV4 signature with botocore's signer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from providers._http import HttpClient
from providers.base import Receipt
from providers.email_ses import SesConfig, SesProvider
from shared.errors import (
    AuthFailed,
    DeliveryError,
    InvalidPayload,
    ProviderUnavailable,
    RateLimited,
    TargetGone,
)
from tests.fakes.server import Reply
from tests.fakes.ses import SEND_PATH, FakeSes, generated_credentials, ses_error
from tests.providers.test_smtp import MESSAGE

AKID, SECRET = generated_credentials()


@pytest.fixture(scope="module")
def ses() -> Iterator[FakeSes]:
    with FakeSes(AKID, SECRET) as server:
        yield server


def config(server: FakeSes, **overrides: Any) -> SesConfig:
    values: dict[str, Any] = {
        "access_key_id": AKID,
        "secret_access_key": SECRET,
        "region": "eu-west-1",
        "endpoint_url": server.endpoint_url,
        "from_address": "Herald <herald@example.com>",
        "to": ["ana@example.com"],
        "cc": ["bo@example.com"],
        "configuration_set": "herald-events",
    }
    values.update(overrides)
    return SesConfig.model_validate(values)


def send(cfg: SesConfig) -> Receipt:
    async def run() -> Receipt:
        http = HttpClient.create(allow_cidrs=["127.0.0.1/32"])
        try:
            return await SesProvider(http).send(MESSAGE, cfg, idempotency_key="d-1", previous_ref=None)
        finally:
            await http.close()

    return asyncio.run(run())


def send_error(cfg: SesConfig) -> DeliveryError:
    with pytest.raises(DeliveryError) as info:
        send(cfg)
    return info.value


def test_signed_send_email_is_verified_and_well_formed(ses: FakeSes):
    before = len(ses.verified)
    receipt = send(config(ses))
    assert len(ses.verified) == before + 1, ses.rejected
    body = json.loads(ses.verified[-1].body)
    assert body["FromEmailAddress"] == "Herald <herald@example.com>"
    assert body["Destination"] == {"ToAddresses": ["ana@example.com"], "CcAddresses": ["bo@example.com"]}
    simple = body["Content"]["Simple"]
    assert simple["Subject"]["Data"] == "[ERROR] checkout 1.4.2 released to prod"
    assert "Version" in simple["Body"]["Text"]["Data"]
    assert "<table" in simple["Body"]["Html"]["Data"]
    assert body["ConfigurationSetName"] == "herald-events"
    # a lifecycle's message: the reference is the Message-ID SES gave the mail (the thread's first)
    ses_id = json.loads(receipt.response_excerpt or "{}")["MessageId"]
    assert receipt.provider_ref == f"<{ses_id}@eu-west-1.amazonses.com>"
    assert SECRET not in ses.verified[-1].headers["authorization"]


def test_wrong_secret_fails_signature_check_as_auth_failed(ses: FakeSes):
    err = send_error(config(ses, secret_access_key="x" * 40))
    assert isinstance(err, AuthFailed)
    assert ses.rejected[-1] == "signature does not match"
    assert "x" * 40 not in f"{err} {err.response_excerpt}"


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (ses_error(429, "TooManyRequestsException", "Maximum sending rate exceeded."), RateLimited),
        (
            Reply(429, '{"message":"Maximum sending rate exceeded."}', content_type="application/json"),
            RateLimited,
        ),
        (ses_error(400, "Throttling", "Rate exceeded"), RateLimited),
        (ses_error(500, "InternalFailure", "oops"), ProviderUnavailable),
        (ses_error(503, "ServiceUnavailable", "later"), ProviderUnavailable),
        (ses_error(400, "MessageRejected", "Email address is not verified."), InvalidPayload),
        (ses_error(400, "MailFromDomainNotVerifiedException", "not verified"), AuthFailed),
        (ses_error(400, "AccountSuspendedException", "suspended"), AuthFailed),
        (ses_error(400, "SendingPausedException", "paused"), AuthFailed),
        (ses_error(400, "LimitExceededException", "too many"), InvalidPayload),
        (ses_error(404, "NotFoundException", "no configuration set"), TargetGone),
    ],
)
def test_errors_are_classified(ses: FakeSes, reply: Reply, expected: type):
    ses.script(SEND_PATH, reply)
    err = send_error(config(ses))
    assert type(err) is expected
    assert err.status_code == reply.status
    assert err.retryable == (expected in (RateLimited, ProviderUnavailable))


def test_retry_after_is_passed_on(ses: FakeSes):
    reply = ses_error(429, "TooManyRequestsException", "slow down")
    reply.headers["Retry-After"] = "7"
    ses.script(SEND_PATH, reply)
    err = send_error(config(ses))
    assert isinstance(err, RateLimited) and err.retry_after_s == 7


def test_config_validation():
    base = {
        "access_key_id": AKID,
        "secret_access_key": SECRET,
        "region": "eu-west-1",
        "from_address": "a@example.com",
        "to": ["b@example.com"],
    }
    assert (
        SesConfig.model_validate(base).url()
        == "https://email.eu-west-1.amazonaws.com/v2/email/outbound-emails"
    )
    for bad in (
        {**base, "region": "eu-west-1/../x"},
        {**base, "access_key_id": "akia-lower"},
        {**base, "endpoint_url": "ftp://example.com"},
        {**base, "to": ["x"]},
    ):
        with pytest.raises(ValueError):
            SesConfig.model_validate(bad)


def test_preview_has_no_secrets(ses: FakeSes):
    cfg = config(ses)

    async def run() -> dict[str, Any]:
        http = HttpClient.create()
        try:
            return SesProvider(http).preview(MESSAGE, cfg)
        finally:
            await http.close()

    preview = asyncio.run(run())
    assert preview["subject"] == "[ERROR] checkout 1.4.2 released to prod"
    assert preview["request"]["Destination"]["ToAddresses"] == ["ana@example.com"]
    assert SECRET not in json.dumps(preview)


LIFECYCLE = replace(MESSAGE, lifecycle_key="incident:chan:ev1")


def send_state(cfg: SesConfig, key: str, previous_ref: str | None) -> Receipt:
    async def run() -> Receipt:
        http = HttpClient.create(allow_cidrs=["127.0.0.1/32"])
        try:
            return await SesProvider(http).send(
                LIFECYCLE, cfg, idempotency_key=key, previous_ref=previous_ref
            )
        finally:
            await http.close()

    return asyncio.run(run())


def test_lifecycle_states_are_one_thread(ses: FakeSes):
    """Issue 11: SES threads a lifecycle as SMTP does. Each later state carries In-Reply-To (the mail before)
    and References (the whole chain) as Simple message headers, on the Message-IDs SES gave the mails
    (`<MessageId@eu-west-1.amazonses.com>`: SES replaces any of ours). Before: no threading headers, and the
    kept reference was the bare SES MessageId."""
    cfg = config(ses)
    before, rejected = len(ses.sent), len(ses.rejected)
    root = send_state(cfg, "d-1", None)
    second = send_state(cfg, "d-2", root.provider_ref)
    third = send_state(cfg, "d-3", second.provider_ref)
    assert len(ses.rejected) == rejected
    m1, m2, m3 = ses.sent[before:]
    ids = [m.message_id for m in (m1, m2, m3)]
    assert m1.headers == {}
    assert m2.headers == {"In-Reply-To": ids[0], "References": ids[0]}
    assert m3.headers == {"In-Reply-To": ids[1], "References": f"{ids[0]} {ids[1]}"}
    assert [root.provider_ref, second.provider_ref, third.provider_ref] == [
        ids[0],
        " ".join(ids[:2]),
        " ".join(ids),
    ]
    # A reference that is not Message-IDs (an injection attempt) starts a new thread instead.
    send_state(cfg, "d-4", "<x@y>\r\nBcc: evil@example.com")
    assert ses.sent[-1].headers == {}


def test_message_id_domain_per_region():
    assert config_for_region("us-east-1").message_id("abc") == "<abc@email.amazonses.com>"
    assert config_for_region("eu-west-1").message_id("abc") == "<abc@eu-west-1.amazonses.com>"
    custom = SesConfig.model_validate(
        {**base_values("eu-west-1"), "message_id_domain": "eu-west-1.amazonses.example"}
    )
    assert custom.message_id("abc") == "<abc@eu-west-1.amazonses.example>"


def base_values(region: str) -> dict[str, Any]:
    return {
        "access_key_id": AKID,
        "secret_access_key": SECRET,
        "region": region,
        "from_address": "herald@example.com",
        "to": ["ana@example.com"],
    }


def config_for_region(region: str) -> SesConfig:
    return SesConfig.model_validate(base_values(region))
