"""Generic webhook: POST a JSON envelope (or the user's own payload template), signed per Standard Webhooks.

Headers: `webhook-id` (the delivery id, stable across retries, so receivers can dedupe), `webhook-timestamp`
(integer seconds), `webhook-signature` (`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`). The
signature covers the exact bytes sent.

Payload: Herald's envelope (`envelope()`), or, when the config has a `template`, that JSON template rendered by
providers/render/template.py (seed 003's Teams, Slack, Discord and RingCentral samples work as they are).

Secret rotation: when `signing_secret` is replaced, the old one moves to `previous_signing_secret` with the time
(`on_config_update`), and for `ROTATION_OVERLAP_S` both sign: `webhook-signature` carries two space-separated
`v1,` values, so a receiver can switch secrets without dropping a message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from providers._http import classify_status, excerpt
from providers.base import Provider, Receipt, attempt_deadline, egress_secret_url, secret_values
from providers.render.template import (
    TemplateError,
    check_template,
    compile_template,
    render_off_loop,
    template_variables,
)
from shared.errors import InvalidPayload
from shared.rendering import RenderedMessage

SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
#: how long after a rotation the previous signing secret still signs (receivers switch within this window)
ROTATION_OVERLAP_S = 24 * 3600
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
    #: the secret `signing_secret` replaced, and when; it keeps signing for ROTATION_OVERLAP_S after that
    previous_signing_secret: SecretStr | None = None
    signing_secret_rotated_at: datetime | None = None
    #: a JSON payload with {{variable}} placeholders sent instead of the envelope (docs/providers.md)
    template: str | None = None  # size checked by the template validator, with its error code
    timeout_s: float = Field(10.0, gt=0, le=30)

    _egress = field_validator("url")(egress_secret_url)

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

    @field_validator("signing_secret", "previous_signing_secret")
    @classmethod
    def _whsec(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            signing_key(value.get_secret_value())
        return value

    @field_validator("template")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                check_template(value)  # compiled, and rendered once on sample values within the limits
            except TemplateError as exc:
                raise ValueError(f"{exc.code}: {exc}") from None
        return value

    @field_validator("signing_secret_rotated_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value

    @model_validator(mode="after")
    def _rotation_pair(self) -> WebhookConfig:
        if self.previous_signing_secret is not None and self.signing_secret_rotated_at is None:
            raise ValueError("previous_signing_secret needs signing_secret_rotated_at")
        if self.previous_signing_secret is not None and self.signing_secret is None:
            raise ValueError("previous_signing_secret needs a signing_secret")
        return self

    def signing_secrets(self, now: datetime) -> list[str]:
        """The secrets that sign at `now`: the current one, and the previous one within the overlap."""
        if self.signing_secret is None:
            return []
        secrets = [self.signing_secret.get_secret_value()]
        rotated_at = self.signing_secret_rotated_at
        if (
            self.previous_signing_secret is not None
            and rotated_at is not None
            and now - rotated_at < timedelta(seconds=ROTATION_OVERLAP_S)
        ):
            secrets.append(self.previous_signing_secret.get_secret_value())
        return secrets


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


def body_for(message: RenderedMessage, config: WebhookConfig) -> bytes:
    """The bytes to send: the rendered template when there is one, else the envelope."""
    if config.template is None:
        return orjson.dumps(envelope(message))
    return compile_template(config.template).render(template_variables(message))


class WebhookProvider(Provider[WebhookConfig]):
    name: ClassVar[str] = "webhook"
    config_model: ClassVar[type[BaseModel]] = WebhookConfig

    def preview(self, message: RenderedMessage, config: WebhookConfig) -> dict[str, Any]:
        if config.template is None:
            return envelope(message)
        try:
            rendered: Any = orjson.loads(body_for(message, config))
        except TemplateError as exc:
            return {"error": exc.code, "detail": str(exc)}
        return rendered if isinstance(rendered, dict) else {"payload": rendered}

    @classmethod
    def on_config_update(
        cls, old: WebhookConfig, new: WebhookConfig, *, now: datetime | None = None
    ) -> WebhookConfig:
        """A re-saved config: when the signing secret changed, keep the old one signing for the overlap."""
        if old.signing_secret is None or new.signing_secret is None:
            return new
        if old.signing_secret.get_secret_value() == new.signing_secret.get_secret_value():
            # Same secret re-saved: keep any rotation still in progress.
            return new.model_copy(
                update={
                    "previous_signing_secret": old.previous_signing_secret,
                    "signing_secret_rotated_at": old.signing_secret_rotated_at,
                }
            )
        return new.model_copy(
            update={
                "previous_signing_secret": old.signing_secret,
                "signing_secret_rotated_at": now or datetime.now(UTC),
            }
        )

    async def send(
        self,
        message: RenderedMessage,
        config: WebhookConfig,
        *,
        idempotency_key: str,
        previous_ref: str | None,
        progress: Mapping[str, str] | None = None,
        deadline: float | None = None,
    ) -> Receipt:
        deadline = attempt_deadline(config, deadline)
        try:
            # A user template renders on a thread of its own: its work must not stall this shared loop.
            body = (
                body_for(message, config)
                if config.template is None
                else await render_off_loop(body_for, message, config)
            )
        except TemplateError as exc:
            raise InvalidPayload(self.name, f"{exc.code}: {exc}") from None
        timestamp_s = int(time.time())
        headers = {k: v.get_secret_value() for k, v in config.headers.items()}
        headers.update(
            {
                "content-type": "application/json",
                "webhook-id": idempotency_key,
                "webhook-timestamp": str(timestamp_s),
            }
        )
        secrets_now = config.signing_secrets(datetime.fromtimestamp(timestamp_s, UTC))
        if secrets_now:
            headers["webhook-signature"] = " ".join(
                sign(secret, idempotency_key, timestamp_s, body) for secret in secrets_now
            )
        response = await self.http.request(
            "POST",
            config.url.get_secret_value(),
            provider=self.name,
            body=body,
            headers=headers,
            timeout_s=config.timeout_s,
            deadline=deadline,
        )
        secrets = list(secret_values(config))
        classify_status(self.name, response, secrets=secrets)
        return Receipt(status_code=response.status, response_excerpt=excerpt(response.body, secrets))
