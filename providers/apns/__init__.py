"""Apple Push Notification service over HTTP/2 with token (JWT) auth: one POST per device token.

- Auth: an ES256 JWT from the team's .p8 key (`kid`, `iss`, `iat`), cached 40 minutes (see _token.py);
  403 ExpiredProviderToken mints a new one and resends that token once in the same attempt (that is
  re-authentication, as Apple prescribes, not a retry).
- Headers: apns-topic, apns-push-type, apns-priority, apns-expiration, apns-collapse-id (the event's lifecycle
  key, hashed when longer than 64 bytes) and apns-id (derived from the delivery id and the token, so a retried
  notification keeps its id).
- Payload at most 4096 bytes: the body is truncated to fit, never refused.
- Per token: 410 (Unregistered, ExpiredToken) removes that token from the integration and counts as target gone
  for it only; the other tokens still get the message. 400 BadDeviceToken does NOT remove it: Apple also sends it
  for a token of the other environment (a sandbox token sent to production), so one misconfigured integration
  would lose every token. It is a permanent `target_gone` that marks the integration failing with a reason
  that names the likely cause. Outcomes are combined by providers/_multitarget.py (a retry resends only to
  tokens not yet delivered).
- Deadline: every request of an attempt (one per token, and the one-shot re-authentication after
  ExpiredProviderToken) shares the attempt's deadline; tokens still unsent when it passes count as timed out.
- Transport: providers/_http2.py (HTTP/2, egress policy on the resolved address), created lazily on the worker
  process's loop, one per provider instance.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from providers._http import HttpClient, HttpResponse, classify_status, excerpt
from providers._http2 import Http2Client
from providers._multitarget import DELIVERED, TargetResult, conclude, pending, send_each
from providers.apns._token import TokenCache, load_key
from providers.apns.payload import build_payload, collapse_id
from providers.base import Provider, Receipt, attempt_deadline, egress_url, secret_values
from shared.config import get_settings
from shared.errors import AuthFailed, DeliveryError, InvalidPayload, RateLimited, TargetGone
from shared.rendering import RenderedMessage

NAME = "apns"
HOSTS = {"production": "https://api.push.apple.com", "sandbox": "https://api.sandbox.push.apple.com"}
GONE_REASONS = frozenset({"Unregistered", "ExpiredToken"})
BAD_DEVICE_TOKEN_DETAIL = "BadDeviceToken: check the APNs environment (sandbox vs production)"  # noqa: S105
MAX_TOKENS = 1000
# Requests in flight at once for one delivery; they multiplex over the HTTP/2 connection.
MAX_CONCURRENT_STREAMS = 20
# The whole attempt's time: timeout_s plus this, inside the worker's own allowance (timeout_s + 5 s).
ATTEMPT_BUDGET_EXTRA_S = 3.0
_NAMESPACE = uuid.UUID("5b1f7f55-2a0e-4d7e-9e39-3f0c1d2a6a01")


class ApnsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    team_id: str = Field(pattern=r"^[A-Z0-9]{10}$")
    key_id: str = Field(pattern=r"^[A-Z0-9]{10}$")
    #: the .p8 file's content (PEM, "-----BEGIN PRIVATE KEY-----" ...)
    private_key: SecretStr
    #: the app's bundle id
    topic: str = Field(pattern=r"^[A-Za-z0-9.-]{1,200}$")
    environment: Literal["production", "sandbox"] = "production"
    #: None = Apple's host for `environment`; set for a local fake or a relay
    endpoint_url: str | None = Field(None, pattern=r"^https://[A-Za-z0-9.\-\[\]:]+$")
    #: empty is allowed: every token may have been removed as unregistered (a send then reports target gone)
    device_tokens: list[str] = Field(default_factory=list, max_length=MAX_TOKENS)
    push_type: Literal["alert", "background"] = "alert"
    #: None = 10 for alert, 5 for background (Apple requires 5 there)
    priority: Literal[1, 5, 10] | None = None
    #: how long APNs keeps an undelivered notification; 0 = try once, do not store
    expiration_s: int = Field(86400, ge=0, le=30 * 86400)
    sound: str | None = Field("default", max_length=100)
    timeout_s: float = Field(10.0, gt=0, le=30)

    _egress = field_validator("endpoint_url")(egress_url)

    @field_validator("private_key")
    @classmethod
    def _key(cls, value: SecretStr) -> SecretStr:
        load_key(value.get_secret_value())
        return value

    @field_validator("device_tokens")
    @classmethod
    def _tokens(cls, value: list[str]) -> list[str]:
        tokens = [t.strip().lower() for t in value]
        for token in tokens:
            if not re.fullmatch(r"[0-9a-f]{64,200}", token):
                raise ValueError("device tokens are hex strings (64 or more hex digits)")
        if len(set(tokens)) != len(tokens):
            raise ValueError("device tokens must not repeat")
        return tokens

    @model_validator(mode="after")
    def _background_priority(self) -> ApnsConfig:
        if self.push_type == "background" and self.priority == 10:
            raise ValueError("background pushes must use priority 5 or 1")
        return self

    def base_url(self) -> str:
        return self.endpoint_url or HOSTS[self.environment]

    def max_attempt_s(self) -> float:
        """Several requests per attempt (one per token, maybe a re-authentication): more than one timeout."""
        return self.timeout_s + ATTEMPT_BUDGET_EXTRA_S

    def effective_priority(self) -> int:
        return self.priority or (10 if self.push_type == "alert" else 5)


class ApnsProvider(Provider[ApnsConfig]):
    name: ClassVar[str] = NAME
    config_model: ClassVar[type[BaseModel]] = ApnsConfig

    def __init__(self, http: HttpClient, *, tls_ca_file: str | None = None) -> None:
        super().__init__(http)
        self._tls_ca_file = tls_ca_file if tls_ca_file is not None else get_settings().tls_ca_file
        self._http2: Http2Client | None = None
        self._tokens = TokenCache()

    def preview(self, message: RenderedMessage, config: ApnsConfig) -> dict[str, Any]:
        return {
            "payload": build_payload(message, config.push_type, config.sound),
            "headers": _headers(message, config, apns_id=None, jwt=None),
            "device_tokens": len(config.device_tokens),
        }

    @classmethod
    def without_targets(cls, config: ApnsConfig, targets: Sequence[str]) -> ApnsConfig | None:
        drop = {t.lower() for t in targets}
        return config.model_copy(update={"device_tokens": [t for t in config.device_tokens if t not in drop]})

    async def aclose(self) -> None:
        if self._http2 is not None:
            await self._http2.close()
            self._http2 = None

    async def send(
        self,
        message: RenderedMessage,
        config: ApnsConfig,
        *,
        idempotency_key: str,
        previous_ref: str | None,
        progress: Mapping[str, str] | None = None,
        deadline: float | None = None,
    ) -> Receipt:
        deadline = attempt_deadline(config, deadline)
        if not config.device_tokens:
            raise TargetGone(NAME, "no device tokens left in this integration")
        todo = pending(config.device_tokens, progress)
        if not todo:
            return Receipt(target_progress={})
        body = orjson.dumps(build_payload(message, config.push_type, config.sound))
        if self._http2 is None:
            self._http2 = Http2Client(self.http.policy, ca_file=self._tls_ca_file)
        results = await send_each(
            NAME,
            todo,
            lambda token: self._send_token(message, config, token, body, idempotency_key, deadline),
            budget_s=deadline - time.monotonic(),
            concurrency=MAX_CONCURRENT_STREAMS,
        )
        return conclude(NAME, results)

    async def _send_token(
        self,
        message: RenderedMessage,
        config: ApnsConfig,
        token: str,
        body: bytes,
        idempotency_key: str,
        deadline: float,
    ) -> TargetResult:
        assert self._http2 is not None
        pem = config.private_key.get_secret_value()
        apns_id = str(uuid.uuid5(_NAMESPACE, f"{idempotency_key}:{token}"))
        url = f"{config.base_url()}/3/device/{token}"
        secrets = list(secret_values(config))

        async def post(jwt: str) -> HttpResponse:
            assert self._http2 is not None
            return await self._http2.request(
                "POST",
                url,
                provider=NAME,
                body=body,
                headers=_headers(message, config, apns_id=apns_id, jwt=jwt),
                timeout_s=config.timeout_s,
                deadline=deadline,
            )

        jwt = self._tokens.token(config.team_id, config.key_id, pem)
        try:
            response = await post(jwt)
            reason = _reason(response)
            if response.status == 403 and reason == "ExpiredProviderToken":
                # Apple's documented re-authentication: one fresh JWT, one resend, same deadline. Not a retry.
                self._tokens.expire(config.team_id, config.key_id, pem, jwt)
                jwt = self._tokens.token(config.team_id, config.key_id, pem)
                response = await post(jwt)
                reason = _reason(response)
                if response.status == 403 and reason == "ExpiredProviderToken":
                    return TargetResult(
                        token,
                        "apns_ExpiredProviderToken",
                        AuthFailed(
                            NAME,
                            "provider token rejected as expired even when fresh (clock skew?)",
                            status_code=403,
                        ),
                    )
        except DeliveryError as exc:
            return TargetResult(token, f"apns_{exc.code}", exc)
        return _result(token, response, reason, [*secrets, jwt])


def _headers(
    message: RenderedMessage, config: ApnsConfig, *, apns_id: str | None, jwt: str | None
) -> dict[str, str]:
    headers = {
        "content-type": "application/json",
        "apns-topic": config.topic,
        "apns-push-type": config.push_type,
        "apns-priority": str(config.effective_priority()),
        "apns-expiration": _expiration(message, config),
    }
    if (cid := collapse_id(message.lifecycle_key)) is not None:
        headers["apns-collapse-id"] = cid
    if apns_id is not None:
        headers["apns-id"] = apns_id
    if jwt is not None:
        headers["authorization"] = f"bearer {jwt}"
    return headers


def _expiration(message: RenderedMessage, config: ApnsConfig) -> str:
    """A gateway message's own `ttl` (capped at the gateway) wins over the integration's expiration_s."""
    expiration_s = message.ttl_s if message.ttl_s is not None else config.expiration_s
    return str(int(time.time()) + expiration_s if expiration_s else 0)


def _reason(response: HttpResponse) -> str | None:
    try:
        data = orjson.loads(response.body)
    except orjson.JSONDecodeError:
        return None
    reason = data.get("reason") if isinstance(data, dict) else None
    return reason if isinstance(reason, str) and re.fullmatch(r"[A-Za-z]{1,64}", reason) else None


def _result(token: str, response: HttpResponse, reason: str | None, secrets: list[str]) -> TargetResult:
    if 200 <= response.status < 300:
        return TargetResult(token, DELIVERED)
    outcome = f"apns_{reason or response.status}"
    kwargs: dict[str, Any] = {
        "status_code": response.status,
        "response_excerpt": excerpt(response.body, secrets),
    }
    if reason in GONE_REASONS:
        return TargetResult(
            token, outcome, TargetGone(NAME, f"device token gone ({reason})", **kwargs), gone=True
        )
    if reason == "BadDeviceToken":
        # Also what a token of the other environment gets: keep the token, flag the integration (marks failing).
        return TargetResult(token, outcome, TargetGone(NAME, BAD_DEVICE_TOKEN_DETAIL, **kwargs))
    if response.status == 429:
        # TooManyRequests (this device, too often) or TooManyProviderTokenUpdates: both pass with time.
        return TargetResult(token, outcome, RateLimited(NAME, f"throttled ({reason})", **kwargs))
    if response.status == 400 or response.status == 413:
        return TargetResult(token, outcome, InvalidPayload(NAME, f"rejected ({reason})", **kwargs))
    try:
        classify_status(NAME, response, secrets=secrets, detail=reason or f"HTTP {response.status}")
    except DeliveryError as exc:
        return TargetResult(token, outcome, exc)
    return TargetResult(token, DELIVERED)  # pragma: no cover - classify_status raises on every non-2xx
