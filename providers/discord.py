"""Discord webhooks: execute with `?wait=true` (so the answer carries the message id), edit in place with PATCH.

Wire facts (reference/provider-protocols.md §2): errors are `{"message": ..., "code": N}`; 404 code 10015 is an
unknown webhook (gone for good: Discord restricts callers who keep using one); 429 carries `retry_after` (seconds,
fractional) in the body besides `Retry-After` and the `X-RateLimit-*` headers. The ref we keep is the message id.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from providers._http import HttpResponse, classify_status, excerpt
from providers.base import Provider, Receipt, attempt_deadline, egress_secret_url, secret_values
from providers.render import discord as render_discord
from shared.errors import RateLimited, TargetGone
from shared.rendering import RenderedMessage

_WEBHOOK_PATH = re.compile(r"/webhooks/\d{5,25}/[A-Za-z0-9_.-]{10,200}/?$")
_SNOWFLAKE = re.compile(r"^\d{5,25}$")
UNKNOWN_WEBHOOK = 10015
UNKNOWN_MESSAGE = 10008


class DiscordConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: where the secrets go (api/secret_destinations.py): the avatar is fetched by Discord, not sent a secret
    destination_fields: ClassVar[frozenset[str]] = frozenset({"webhook_url"})

    #: https://discord.com/api/webhooks/{id}/{token} (optionally ?thread_id=...): the token makes it a secret
    webhook_url: SecretStr
    #: override the webhook's name and avatar for our messages
    username: str | None = Field(None, min_length=1, max_length=80)
    avatar_url: str | None = Field(None, max_length=2048, pattern=r"^https://\S+$")
    #: edit the earlier message of the same lifecycle (pipeline trigger -> success) instead of posting anew
    edit_in_place: bool = True
    timeout_s: float = Field(10.0, gt=0, le=30)

    _egress = field_validator("webhook_url")(egress_secret_url)

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url(cls, value: SecretStr) -> SecretStr:
        parts = urlsplit(value.get_secret_value())
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or not _WEBHOOK_PATH.search(parts.path)
        ):
            raise ValueError("must be a Discord webhook URL: https://discord.com/api/webhooks/<id>/<token>")
        if any(k != "thread_id" or not _SNOWFLAKE.match(v) for k, v in parse_qsl(parts.query)):
            raise ValueError("only a numeric thread_id may be given in the query")
        return value


def _urls(config: DiscordConfig) -> tuple[str, str]:
    """(base URL without query, the query to keep: thread_id or empty)."""
    parts = urlsplit(config.webhook_url.get_secret_value())
    base = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
    return base, parts.query


def discord_error(response: HttpResponse) -> tuple[int | None, str]:
    """Discord's JSON error code and message, if the body is one."""
    try:
        body = orjson.loads(response.body)
    except orjson.JSONDecodeError:
        return None, ""
    if not isinstance(body, dict):
        return None, ""
    code = body.get("code")
    return (code if isinstance(code, int) else None), str(body.get("message") or "")[:200]


def retry_after_s(response: HttpResponse) -> float | None:
    """The longest of the body's `retry_after`, `Retry-After` and `X-RateLimit-Reset-After` (all seconds)."""
    hints: list[float] = []
    try:
        body = orjson.loads(response.body)
        if isinstance(body, dict) and isinstance(body.get("retry_after"), int | float):
            hints.append(float(body["retry_after"]))
    except orjson.JSONDecodeError:
        pass
    for header in ("retry-after", "x-ratelimit-reset-after"):
        try:
            hints.append(float(response.headers.get(header, "")))
        except ValueError:
            continue
    return max(hints) if hints else None


class DiscordProvider(Provider[DiscordConfig]):
    name: ClassVar[str] = "discord"
    config_model: ClassVar[type[BaseModel]] = DiscordConfig
    supports_edit: ClassVar[bool] = True
    max_text_chars: ClassVar[int | None] = render_discord.MAX_DESCRIPTION_CHARS

    def _body(self, message: RenderedMessage, config: DiscordConfig, *, edit: bool) -> dict[str, Any]:
        body = render_discord.render(message)
        if not edit:  # name and avatar are fixed when a message is created
            if config.username:
                body["username"] = config.username
            if config.avatar_url:
                body["avatar_url"] = config.avatar_url
        return body

    def preview(self, message: RenderedMessage, config: DiscordConfig) -> dict[str, Any]:
        return self._body(message, config, edit=False)

    async def send(
        self,
        message: RenderedMessage,
        config: DiscordConfig,
        *,
        idempotency_key: str,
        previous_ref: str | None,
        progress: Mapping[str, str] | None = None,
        deadline: float | None = None,
    ) -> Receipt:
        deadline = attempt_deadline(config, deadline)
        base, query = _urls(config)
        if config.edit_in_place and previous_ref and _SNOWFLAKE.match(previous_ref):
            url = f"{base}/messages/{previous_ref}" + (f"?{query}" if query else "")
            response = await self._request(
                "PATCH", url, self._body(message, config, edit=True), config, deadline=deadline
            )
            if response.status != 404 or discord_error(response)[0] != UNKNOWN_MESSAGE:
                return self._receipt(response, config, previous_ref)
            # The message was deleted: post a new one instead, a second request of the same attempt (not a
            # retry), within what is left of the same deadline.
        url = f"{base}?wait=true" + (f"&{query}" if query else "")
        response = await self._request(
            "POST", url, self._body(message, config, edit=False), config, deadline=deadline
        )
        return self._receipt(response, config, None)

    async def _request(
        self, method: str, url: str, body: dict[str, Any], config: DiscordConfig, *, deadline: float
    ) -> HttpResponse:
        return await self.http.request(
            method,
            url,
            provider=self.name,
            body=orjson.dumps(body),
            headers={"content-type": "application/json"},
            timeout_s=config.timeout_s,
            deadline=deadline,
        )

    def _receipt(self, response: HttpResponse, config: DiscordConfig, edited_ref: str | None) -> Receipt:
        secrets = list(secret_values(config))
        if not 200 <= response.status < 300:
            code, text = discord_error(response)
            detail = excerpt(f"discord {code}: {text}", secrets) if code is not None else None
            if response.status == 404 and code == UNKNOWN_WEBHOOK:
                raise TargetGone(
                    self.name,
                    "unknown webhook (10015): it was deleted",
                    status_code=404,
                    response_excerpt=excerpt(response.body, secrets),
                )
            try:
                classify_status(self.name, response, secrets=secrets, detail=detail)
            except RateLimited as exc:
                exc.retry_after_s = retry_after_s(response)
                raise
        ref = edited_ref
        try:
            answer = orjson.loads(response.body) if response.body else None
        except orjson.JSONDecodeError:
            answer = None
        if isinstance(answer, dict) and isinstance(answer.get("id"), str) and _SNOWFLAKE.match(answer["id"]):
            ref = answer["id"]
        return Receipt(
            provider_ref=ref, status_code=response.status, response_excerpt=excerpt(response.body, secrets)
        )
