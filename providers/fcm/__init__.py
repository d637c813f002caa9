"""Firebase Cloud Messaging HTTP v1: `messages:send` once per device token or topic, with OAuth 2.

- Auth: the service account's JWT grant (RS256) for an access token, cached until shortly before it expires
  (_oauth.py). A 401 invalidates it and resends that target once with a fresh token, in the same attempt:
  re-authentication, not a retry.
- Targets: `device_tokens` and `topics` (stored in progress as "topic:<name>"); a retry sends only to targets
  not yet delivered (providers/_multitarget.py combines the outcomes).
- `details[].errorCode`: UNREGISTERED removes that token from the integration (target gone for it only);
  QUOTA_EXCEEDED, UNAVAILABLE and INTERNAL are retryable (Retry-After honoured); INVALID_ARGUMENT and
  SENDER_ID_MISMATCH are permanent; THIRD_PARTY_AUTH_ERROR is auth failed. Otherwise the HTTP status decides.
- Token endpoint (the service account's `token_uri`) and `api_base_url` are configurable (a local fake in tests).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from providers._http import HttpClient, HttpResponse, classify_status, excerpt, parse_retry_after
from providers._multitarget import DELIVERED, TargetResult, conclude, pending, send_each
from providers.base import Provider, Receipt, attempt_deadline, egress_url, secret_values
from providers.fcm._oauth import AccessTokens, Account, load_key
from providers.fcm.message import TOPIC_PREFIX, build_message
from shared.errors import (
    AuthFailed,
    DeliveryError,
    InvalidPayload,
    ProviderUnavailable,
    RateLimited,
    TargetGone,
)
from shared.rendering import RenderedMessage

NAME = "fcm"
MAX_TARGETS = 1000
MAX_CONCURRENT_SENDS = 20
# The whole attempt's time: timeout_s plus this, inside the worker's own allowance (timeout_s + 5 s).
ATTEMPT_BUDGET_EXTRA_S = 3.0
RETRYABLE_CODES = frozenset({"QUOTA_EXCEEDED", "UNAVAILABLE", "INTERNAL"})
PERMANENT_CODES = frozenset({"INVALID_ARGUMENT", "SENDER_ID_MISMATCH"})
_HTTP_URL = r"^https?://[A-Za-z0-9.\-\[\]:]+(/[A-Za-z0-9._~/-]*)?$"


class FcmServiceAccount(BaseModel):
    """The service account JSON Google gives you; fields we do not use (type, client_id ...) are ignored."""

    model_config = ConfigDict(extra="ignore")

    project_id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{2,62}$")
    client_email: str = Field(pattern=r"^[^@\s]+@[^@\s]+$", max_length=320)
    private_key: SecretStr
    private_key_id: str | None = Field(None, pattern=r"^[A-Za-z0-9]{1,100}$")
    token_uri: str = Field("https://oauth2.googleapis.com/token", pattern=_HTTP_URL)

    _egress = field_validator("token_uri")(egress_url)

    @field_validator("private_key")
    @classmethod
    def _key(cls, value: SecretStr) -> SecretStr:
        load_key(value.get_secret_value())
        return value


class FcmConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    service_account: FcmServiceAccount
    #: registration tokens; may end up empty once every token was removed as unregistered
    device_tokens: list[str] = Field(default_factory=list, max_length=MAX_TARGETS)
    topics: list[str] = Field(default_factory=list, max_length=100)
    api_base_url: str = Field("https://fcm.googleapis.com", pattern=_HTTP_URL)
    android_priority: Literal["normal", "high"] = "high"
    ttl_s: int = Field(86400, ge=0, le=2_419_200)
    timeout_s: float = Field(10.0, gt=0, le=30)

    _egress = field_validator("api_base_url")(egress_url)

    @field_validator("device_tokens")
    @classmethod
    def _tokens(cls, value: list[str]) -> list[str]:
        tokens = [t.strip() for t in value]
        for token in tokens:
            if not re.fullmatch(r"[A-Za-z0-9_:\-]{20,4096}", token):
                raise ValueError("a registration token is 20+ characters of [A-Za-z0-9_:-]")
        if len(set(tokens)) != len(tokens):
            raise ValueError("device tokens must not repeat")
        return tokens

    @field_validator("topics")
    @classmethod
    def _topics(cls, value: list[str]) -> list[str]:
        topics = [t.strip().removeprefix("/topics/") for t in value]
        for topic in topics:
            if not re.fullmatch(r"[A-Za-z0-9\-_.~%]{1,900}", topic):
                raise ValueError(f"{topic[:50]!r} is not an FCM topic name")
        return list(dict.fromkeys(topics))

    @model_validator(mode="after")
    def _urls(self) -> FcmConfig:
        self.api_base_url = self.api_base_url.rstrip("/")
        return self

    def targets(self) -> list[str]:
        return [*self.device_tokens, *(TOPIC_PREFIX + t for t in self.topics)]

    def account(self) -> Account:
        sa = self.service_account
        return Account(sa.client_email, sa.private_key.get_secret_value(), sa.private_key_id, sa.token_uri)

    def max_attempt_s(self) -> float:
        """A token fetch, then one request per target (and maybe a re-authentication): more than one timeout."""
        return self.timeout_s + ATTEMPT_BUDGET_EXTRA_S

    def send_url(self) -> str:
        return f"{self.api_base_url}/v1/projects/{self.service_account.project_id}/messages:send"


class FcmProvider(Provider[FcmConfig]):
    name: ClassVar[str] = NAME
    config_model: ClassVar[type[BaseModel]] = FcmConfig

    def __init__(self, http: HttpClient) -> None:
        super().__init__(http)
        self._tokens = AccessTokens(http, NAME)

    def preview(self, message: RenderedMessage, config: FcmConfig) -> dict[str, Any]:
        targets = config.targets()
        example = targets[0] if targets else "<registration token>"
        return {
            "request": build_message(
                message, example, android_priority=config.android_priority, ttl_s=config.ttl_s
            ),
            "targets": len(targets),
        }

    @classmethod
    def without_targets(cls, config: FcmConfig, targets: Sequence[str]) -> FcmConfig | None:
        drop = set(targets)
        return config.model_copy(update={"device_tokens": [t for t in config.device_tokens if t not in drop]})

    async def send(
        self,
        message: RenderedMessage,
        config: FcmConfig,
        *,
        idempotency_key: str,
        previous_ref: str | None,
        progress: Mapping[str, str] | None = None,
        deadline: float | None = None,
    ) -> Receipt:
        deadline = attempt_deadline(config, deadline)
        if not config.targets():
            raise TargetGone(NAME, "no device tokens or topics left in this integration")
        todo = pending(config.targets(), progress)
        if not todo:
            return Receipt(target_progress={})
        account = config.account()
        # The token is fetched once up front: a failure here (bad key) is the whole attempt's, not per target.
        await self._tokens.get(account, timeout_s=config.timeout_s, deadline=deadline)
        results = await send_each(
            NAME,
            todo,
            lambda target: self._send_target(message, config, account, target, deadline),
            budget_s=deadline - time.monotonic(),
            concurrency=MAX_CONCURRENT_SENDS,
        )
        return conclude(NAME, results)

    async def _send_target(
        self, message: RenderedMessage, config: FcmConfig, account: Account, target: str, deadline: float
    ) -> TargetResult:
        body = orjson.dumps(
            build_message(message, target, android_priority=config.android_priority, ttl_s=config.ttl_s)
        )

        async def post(access_token: str) -> HttpResponse:
            return await self.http.request(
                "POST",
                config.send_url(),
                provider=NAME,
                body=body,
                headers={"authorization": f"Bearer {access_token}", "content-type": "application/json"},
                timeout_s=config.timeout_s,
                deadline=deadline,
            )

        try:
            access_token = await self._tokens.get(account, timeout_s=config.timeout_s, deadline=deadline)
            response = await post(access_token)
            # A 401 UNAUTHENTICATED is our access token; THIRD_PARTY_AUTH_ERROR (also 401) is the app's APNs or
            # web-push credentials at Google, which a new token does not fix.
            if _token_refused(response):
                # The documented one-shot re-authentication: a fresh token, one resend, same deadline.
                self._tokens.invalidate(account, access_token)
                access_token = await self._tokens.get(account, timeout_s=config.timeout_s, deadline=deadline)
                response = await post(access_token)
                if _token_refused(response):
                    return TargetResult(
                        target,
                        "fcm_UNAUTHENTICATED",
                        AuthFailed(NAME, "access token refused even when fresh", status_code=401),
                    )
        except DeliveryError as exc:
            return TargetResult(target, f"fcm_{exc.code}", exc)
        return _result(target, response, [*secret_values(config), access_token])


def _token_refused(response: HttpResponse) -> bool:
    return response.status == 401 and error_code(response) in (None, "UNAUTHENTICATED")


def error_code(response: HttpResponse) -> str | None:
    """The FCM `details[].errorCode`, else the canonical `error.status`."""
    try:
        error = orjson.loads(response.body).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    if not isinstance(error, dict):
        return None
    for detail in error.get("details") or []:
        if isinstance(detail, dict) and isinstance(code := detail.get("errorCode"), str):
            return code if re.fullmatch(r"[A-Z_]{1,64}", code) else None
    status = error.get("status")
    return status if isinstance(status, str) and re.fullmatch(r"[A-Z_]{1,64}", status) else None


def _result(target: str, response: HttpResponse, secrets: list[str]) -> TargetResult:
    if 200 <= response.status < 300:
        return TargetResult(target, DELIVERED)
    code = error_code(response)
    outcome = f"fcm_{code or response.status}"
    kwargs: dict[str, Any] = {
        "status_code": response.status,
        "response_excerpt": excerpt(response.body, secrets),
    }
    if code == "UNREGISTERED" and not target.startswith(TOPIC_PREFIX):
        return TargetResult(
            target, outcome, TargetGone(NAME, "registration token unregistered", **kwargs), gone=True
        )
    if code in RETRYABLE_CODES:
        hint = parse_retry_after(response.headers.get("retry-after"))
        if code == "QUOTA_EXCEEDED" or hint is not None:
            return TargetResult(target, outcome, RateLimited(NAME, f"{code}", retry_after_s=hint, **kwargs))
        return TargetResult(target, outcome, ProviderUnavailable(NAME, f"{code}", **kwargs))
    if code in PERMANENT_CODES:
        return TargetResult(target, outcome, InvalidPayload(NAME, f"{code}", **kwargs))
    if code == "THIRD_PARTY_AUTH_ERROR":
        return TargetResult(target, outcome, AuthFailed(NAME, f"{code}", **kwargs))
    try:
        classify_status(NAME, response, secrets=secrets, detail=code or f"HTTP {response.status}")
    except DeliveryError as exc:
        return TargetResult(target, outcome, exc)
    return TargetResult(target, DELIVERED)  # pragma: no cover - classify_status raises on every non-2xx
