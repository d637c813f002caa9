"""Generic webhook: POST a JSON envelope, signed per Standard Webhooks.

Headers: `webhook-id` (the delivery id, stable across retries, so receivers can dedupe), `webhook-timestamp`
(integer seconds), `webhook-signature` (`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`). The
signature covers the exact bytes sent.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections.abc import Mapping
from typing import Any, ClassVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from providers._http import classify_status, excerpt
from providers.base import Provider, Receipt, secret_values
from shared.rendering import RenderedMessage

SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$")
# Headers we set ourselves; a user header may not override them.
_RESERVED_HEADERS = {
    "content-type",
    "content-length",
    "host",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
}


class WebhookConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # The whole URL is secret: many receivers put a token in the path or query.
    url: SecretStr
    headers: dict[str, SecretStr] = Field(default_factory=dict, max_length=20)
    signing_secret: SecretStr | None = None
    timeout_s: float = Field(10.0, gt=0, le=30)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: SecretStr) -> SecretStr:
        raw = value.get_secret_value()
        if not re.match(r"^https?://[^\s/?#]+", raw) or len(raw) > 2048:
            raise ValueError("must be an http(s) URL of at most 2048 characters")
        return value

    @field_validator("headers")
    @classmethod
    def _header_names(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, header_value in value.items():
            if not _HEADER_NAME.match(name) or name.lower() in _RESERVED_HEADERS:
                raise ValueError(f"header {name[:100]!r} is not allowed")
            if any(c in header_value.get_secret_value() for c in "\r\n\0"):
                raise ValueError(f"header {name!r} has a control character in its value")
        return value

    @field_validator("signing_secret")
    @classmethod
    def _whsec(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            signing_key(value.get_secret_value())
        return value


def signing_key(secret: str) -> bytes:
    """The HMAC key: the base64-decoded bytes after `whsec_`, 24 to 64 of them."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("signing secret must start with 'whsec_'")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("signing secret is not valid base64 after 'whsec_'") from None
    if not 24 <= len(key) <= 64:
        raise ValueError("signing secret must decode to 24-64 bytes")
    return key


def sign(secret: str, msg_id: str, timestamp_s: int, body: bytes) -> str:
    mac = hmac.new(signing_key(secret), f"{msg_id}.{timestamp_s}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def envelope(message: RenderedMessage) -> dict[str, Any]:
    return {
        "type": message.event_type,
        "timestamp": message.data.get("created_at"),
        "data": message.data,
        "message": {
            "title": message.title,
            "text": message.text,
            "severity": message.severity,
            "fields": [{"name": n, "value": v} for n, v in message.fields],
            "link": message.link,
        },
    }


class WebhookProvider(Provider[WebhookConfig]):
    name: ClassVar[str] = "webhook"
    config_model: ClassVar[type[BaseModel]] = WebhookConfig

    def preview(self, message: RenderedMessage, config: WebhookConfig) -> dict[str, Any]:
        return envelope(message)

    async def send(
        self,
        message: RenderedMessage,
        config: WebhookConfig,
        *,
        idempotency_key: str,
        previous_ref: str | None,
        progress: Mapping[str, str] | None = None,
    ) -> Receipt:
        body = orjson.dumps(envelope(message))
        timestamp_s = int(time.time())
        headers = {k: v.get_secret_value() for k, v in config.headers.items()}
        headers.update(
            {
                "content-type": "application/json",
                "webhook-id": idempotency_key,
                "webhook-timestamp": str(timestamp_s),
            }
        )
        if config.signing_secret is not None:
            headers["webhook-signature"] = sign(
                config.signing_secret.get_secret_value(), idempotency_key, timestamp_s, body
            )
        response = await self.http.request(
            "POST",
            config.url.get_secret_value(),
            provider=self.name,
            body=body,
            headers=headers,
            timeout_s=config.timeout_s,
        )
        secrets = list(secret_values(config))
        classify_status(self.name, response, secrets=secrets)
        return Receipt(status_code=response.status, response_excerpt=excerpt(response.body, secrets))
