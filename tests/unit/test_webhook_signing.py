"""Standard Webhooks signatures, checked with the reference library."""

from __future__ import annotations

import time

import pytest
import standardwebhooks

from providers.base import mask_config
from providers.webhook import WebhookConfig, sign, signing_key

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_signature_verifies_with_reference_library():
    body = b'{"type":"release.created","data":{"v":"1.0"}}'
    ts = int(time.time())
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(SECRET, "msg_1", ts, body),
    }
    assert standardwebhooks.Webhook(SECRET).verify(body, headers) == {
        "type": "release.created",
        "data": {"v": "1.0"},
    }
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(SECRET).verify(body + b" ", headers)


@pytest.mark.parametrize("secret", ["nope", "whsec_!!!", "whsec_c2hvcnQ=", "whsec_" + "QUFB" * 30])
def test_bad_signing_secrets_are_refused(secret):
    with pytest.raises(ValueError):
        signing_key(secret)


def test_config_validation_and_masking():
    config = WebhookConfig.model_validate(
        {
            "url": "https://example.com/hook?token=abc",
            "headers": {"Authorization": "Bearer zzz"},
            "signing_secret": SECRET,
        }
    )
    masked = mask_config(config)
    assert masked == {
        "url": "https://example.com/********",
        "headers": {"Authorization": "********"},
        "signing_secret": "********",
        "previous_signing_secret": None,
        "signing_secret_rotated_at": None,
        "template": None,
        "timeout_s": 10.0,
    }
    for bad in (
        {"url": "ftp://example.com"},
        {"url": "https://example.com", "headers": {"webhook-id": "x"}},
        {"url": "https://example.com", "headers": {"X-Evil": "a\r\nInjected: 1"}},
        {"url": "https://example.com", "timeout_s": 600},
        {"url": "https://example.com", "unknown": 1},
    ):
        with pytest.raises(ValueError):
            WebhookConfig.model_validate(bad)
