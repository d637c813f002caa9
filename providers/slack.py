"""Slack: the incoming webhook (`slack`) and the bot token Web API (`slack_bot`, edit in place).

Incoming webhook (reference/provider-protocols.md §1.1): success is 200 with the body `ok` and nothing else; an
error is the bare error string as the body (`invalid_payload`, `channel_not_found`, ...), classified here.

Web API (§1.3): `chat.postMessage`, or `chat.update` when the worker hands us the ref of an earlier message of the
same lifecycle. Failures come as HTTP 200 `{"ok": false, "error": ...}`; 429 carries Retry-After. The ref we keep
is `"<channel id>:<ts>"`, the two things chat.update needs.

chat.postMessage has no idempotency key, so a post whose answer was lost (our timeout, a reset connection) may
have landed. Every post carries the delivery id in its message `metadata`, and the attempt that could not tell
leaves `UNCONFIRMED_POST_SINCE` in the delivery's progress; the next attempt first looks for its message in
`conversations.history` (scope `channels:history` / `groups:history`, the channel configured by id) and adopts
its `ts` instead of posting a second root. If the lookup cannot be made (a channel name, a missing scope, any
error but a rate limit), it posts as before: a duplicate is better than a lost incident message.
"""

from __future__ import annotations

import logging
import re
import time
import urllib.parse
from collections.abc import Mapping
from typing import Any, ClassVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from providers._http import HttpResponse, classify_status, excerpt, parse_retry_after
from providers.base import Provider, Receipt, attempt_deadline, egress_secret_url, egress_url, secret_values
from providers.render import slack as render_slack
from shared.errors import (
    AuthFailed,
    DeliveryError,
    InvalidPayload,
    ProviderUnavailable,
    RateLimited,
    TargetGone,
    TransportTimeout,
)
from shared.rendering import RenderedMessage

log = logging.getLogger(__name__)

# The metadata event type on every message the bot posts; its payload names the delivery.
METADATA_EVENT_TYPE = "herald_delivery"
# Progress key: an attempt's post may have landed unseen since this time (epoch seconds).
UNCONFIRMED_POST_SINCE = "slack_post_unconfirmed_since"
# How far before that time the lookup starts (Slack's ts and our clock may disagree a little), and how much of
# the channel's history it reads at most.
HISTORY_MARGIN_S = 30.0
HISTORY_PAGE_MESSAGES = 100
HISTORY_MAX_PAGES = 5
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{6,}$")

_HTTP_URL = re.compile(r"^https?://[^\s/?#]+\S*$")

# Slack's error strings -> our taxonomy. Anything not listed falls back to the HTTP status (webhook) or counts
# as invalid payload (Web API, where everything else is about the request).
SLACK_ERRORS: dict[str, type[DeliveryError]] = {
    # transient
    "ratelimited": RateLimited,
    "rate_limited": RateLimited,
    "internal_error": ProviderUnavailable,
    "fatal_error": ProviderUnavailable,
    "service_unavailable": ProviderUnavailable,
    "request_timeout": ProviderUnavailable,
    "rollup_error": ProviderUnavailable,
    # credentials and permissions: the integration needs fixing
    "invalid_auth": AuthFailed,
    "not_authed": AuthFailed,
    "invalid_token": AuthFailed,
    "account_inactive": AuthFailed,
    "token_revoked": AuthFailed,
    "token_expired": AuthFailed,
    "missing_scope": AuthFailed,
    "no_permission": AuthFailed,
    "action_prohibited": AuthFailed,
    "posting_to_general_channel_denied": AuthFailed,
    "restricted_action": AuthFailed,
    "team_access_not_granted": AuthFailed,
    # the destination is gone
    "channel_not_found": TargetGone,
    "channel_is_archived": TargetGone,
    "is_archived": TargetGone,
    "not_in_channel": TargetGone,
    "is_inactive": TargetGone,
    "no_service": TargetGone,
    "no_service_id": TargetGone,
    "no_team": TargetGone,
    "team_disabled": TargetGone,
    "no_active_hooks": TargetGone,
    "user_not_found": TargetGone,
    # the message itself
    "invalid_payload": InvalidPayload,
    "too_many_attachments": InvalidPayload,
    "msg_too_long": InvalidPayload,
    "msg_blocks_too_long": InvalidPayload,
    "no_text": InvalidPayload,
    "invalid_blocks": InvalidPayload,
    "invalid_blocks_format": InvalidPayload,
}
# chat.update errors after which a fresh chat.postMessage is the right thing (the old message is gone or frozen)
_UPDATE_FALLBACK = {"message_not_found", "cant_update_message", "edit_window_closed"}


def slack_error(
    provider: str, code: str, response: HttpResponse, secrets: list[str], *, default: type[DeliveryError]
) -> DeliveryError:
    """The taxonomy error for one of Slack's error strings."""
    cls = SLACK_ERRORS.get(code, default)
    kwargs: dict[str, Any] = {
        "status_code": response.status,
        "response_excerpt": excerpt(response.body, secrets),
    }
    if cls is RateLimited:
        kwargs["retry_after_s"] = parse_retry_after(response.headers.get("retry-after"))
    return cls(provider, f"slack error {code}", **kwargs)


def _check_url(value: SecretStr) -> SecretStr:
    raw = value.get_secret_value()
    if not _HTTP_URL.match(raw) or len(raw) > 2048:
        raise ValueError("must be an http(s) URL of at most 2048 characters")
    return value


class SlackWebhookConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: https://hooks.slack.com/services/T.../B.../<secret>: the whole URL is the credential
    webhook_url: SecretStr
    #: display only (an app's incoming webhook is bound to the channel chosen when it was installed)
    channel: str | None = Field(None, max_length=100)
    timeout_s: float = Field(10.0, gt=0, le=30)

    _url = field_validator("webhook_url")(_check_url)
    _egress = field_validator("webhook_url")(egress_secret_url)


class SlackWebhookProvider(Provider[SlackWebhookConfig]):
    name: ClassVar[str] = "slack"
    config_model: ClassVar[type[BaseModel]] = SlackWebhookConfig
    max_text_chars: ClassVar[int | None] = render_slack.MAX_SECTION_TEXT_CHARS

    def preview(self, message: RenderedMessage, config: SlackWebhookConfig) -> dict[str, Any]:
        return render_slack.render(message)

    async def send(
        self,
        message: RenderedMessage,
        config: SlackWebhookConfig,
        *,
        idempotency_key: str,
        previous_ref: str | None,
        progress: Mapping[str, str] | None = None,
        deadline: float | None = None,
    ) -> Receipt:
        deadline = attempt_deadline(config, deadline)
        response = await self.http.request(
            "POST",
            config.webhook_url.get_secret_value(),
            provider=self.name,
            body=orjson.dumps(render_slack.render(message)),
            headers={"content-type": "application/json; charset=utf-8"},
            timeout_s=config.timeout_s,
            deadline=deadline,
        )
        secrets = list(secret_values(config))
        body = response.text().strip()
        if response.status == 200 and body == "ok":
            return Receipt(status_code=200, response_excerpt="ok")
        # 429 and 5xx: the status says it all (and carries Retry-After); the body may be an HTML error page.
        if response.status == 429 or response.status >= 500:
            classify_status(self.name, response, secrets=secrets)
        if body in SLACK_ERRORS:
            raise slack_error(self.name, body, response, secrets, default=InvalidPayload)
        classify_status(self.name, response, secrets=secrets)
        # A 2xx that is not `200 ok`: Slack says count nothing else as success. Retried, so a message is not
        # lost to a proxy's odd answer; the attempt budget bounds it.
        raise ProviderUnavailable(
            self.name,
            f"unexpected answer (HTTP {response.status}, not 'ok')",
            status_code=response.status,
            response_excerpt=excerpt(response.body, secrets),
        )


class SlackBotConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: a bot token (xoxb-...) with chat:write
    token: SecretStr
    #: a channel id (C0123ABCD) or name (#deploys); chat.postMessage answers with the id, which the ref keeps
    channel: str = Field(min_length=1, max_length=100, pattern=r"^[#@]?[A-Za-z0-9._-]+$")
    #: edit the earlier message of the same lifecycle (pipeline trigger -> success) instead of posting anew
    edit_in_place: bool = True
    #: with edit_in_place: also post each new state as a reply in the edited message's thread (a history)
    thread_replies: bool = False
    api_base_url: str = Field("https://slack.com/api", max_length=200, pattern=r"^https?://[^\s?#]+$")
    timeout_s: float = Field(10.0, gt=0, le=30)

    _egress = field_validator("api_base_url")(egress_url)

    @field_validator("token")
    @classmethod
    def _token_shape(cls, value: SecretStr) -> SecretStr:
        if not re.match(r"^xox[a-z](?:-[A-Za-z0-9]+)+$", value.get_secret_value()):
            raise ValueError("must be a Slack token (xoxb-...)")
        return value


def make_ref(channel: str, ts: str) -> str:
    return f"{channel}:{ts}"


def parse_ref(ref: str | None) -> tuple[str, str] | None:
    """(channel, ts) from a ref we made, or None for anything else (a ref from an older config, garbage)."""
    if not ref:
        return None
    channel, sep, ts = ref.partition(":")
    if not sep or not re.match(r"^[A-Z0-9]{2,}$", channel) or not re.match(r"^\d+\.\d+$", ts):
        return None
    return channel, ts


class SlackBotProvider(Provider[SlackBotConfig]):
    name: ClassVar[str] = "slack_bot"
    config_model: ClassVar[type[BaseModel]] = SlackBotConfig
    supports_edit: ClassVar[bool] = True
    max_text_chars: ClassVar[int | None] = render_slack.MAX_SECTION_TEXT_CHARS

    def preview(self, message: RenderedMessage, config: SlackBotConfig) -> dict[str, Any]:
        return {"channel": config.channel, **render_slack.render(message), "unfurl_links": False}

    def _edit_target(self, config: SlackBotConfig, previous_ref: str | None) -> tuple[str, str] | None:
        ref = parse_ref(previous_ref) if config.edit_in_place else None
        if ref is None:
            return None
        # The channel was changed since that message: post in the new one rather than edit the old.
        configured = config.channel.lstrip("#")
        if re.match(r"^[CGD][A-Z0-9]{6,}$", configured) and configured != ref[0]:
            return None
        return ref

    async def send(
        self,
        message: RenderedMessage,
        config: SlackBotConfig,
        *,
        idempotency_key: str,
        previous_ref: str | None,
        progress: Mapping[str, str] | None = None,
        deadline: float | None = None,
    ) -> Receipt:
        deadline = attempt_deadline(config, deadline)
        body = render_slack.render(message)
        target = self._edit_target(config, previous_ref)
        if target is not None:
            channel, ts = target
            try:
                receipt = await self._call(
                    config, "chat.update", {"channel": channel, "ts": ts, **body}, deadline=deadline
                )
            except _CannotUpdate:
                # Deleted or too old to edit: post a new message instead, a second request of the same attempt
                # (not a retry): it gets what is left of the same deadline, or a TransportTimeout if nothing is.
                pass
            else:
                if config.thread_replies:
                    # Same attempt and deadline; a retry repeats the (idempotent) update and this reply.
                    await self._call(
                        config,
                        "chat.postMessage",
                        {"channel": channel, "thread_ts": ts, **body, "unfurl_links": False},
                        deadline=deadline,
                    )
                return receipt
        return await self._post_once(config, body, idempotency_key, progress, deadline)

    async def _post_once(
        self,
        config: SlackBotConfig,
        body: dict[str, Any],
        delivery_id: str,
        progress: Mapping[str, str] | None,
        deadline: float,
    ) -> Receipt:
        """chat.postMessage, unless an earlier attempt's post of this delivery is already in the channel."""
        unconfirmed_since = (progress or {}).get(UNCONFIRMED_POST_SINCE)
        if unconfirmed_since is not None:
            found = await self._find_posted(config, delivery_id, float(unconfirmed_since), deadline)
            if found is not None:
                return found
        started_at = unconfirmed_since or f"{time.time():.3f}"
        metadata = {"event_type": METADATA_EVENT_TYPE, "event_payload": {"delivery_id": delivery_id}}
        try:
            return await self._call(
                config,
                "chat.postMessage",
                {"channel": config.channel, **body, "unfurl_links": False, "metadata": metadata},
                deadline=deadline,
            )
        except (TransportTimeout, ProviderUnavailable) as exc:
            if isinstance(exc, TransportTimeout) or exc.status_code is None:  # no answer: it may have landed
                exc.target_progress[UNCONFIRMED_POST_SINCE] = started_at
            raise

    async def _find_posted(
        self, config: SlackBotConfig, delivery_id: str, since_s: float, deadline: float
    ) -> Receipt | None:
        """The receipt of this delivery's message if an earlier attempt did post it, else None (post again)."""
        channel = config.channel
        if not _CHANNEL_ID.match(channel):
            return None  # conversations.history needs the id; a name cannot be looked up without more scopes
        cursor = ""
        for _ in range(HISTORY_MAX_PAGES):
            query = {
                "channel": channel,
                "oldest": f"{since_s - HISTORY_MARGIN_S:.6f}",
                "limit": str(HISTORY_PAGE_MESSAGES),
                "include_all_metadata": "true",
                **({"cursor": cursor} if cursor else {}),
            }
            try:
                answer = await self._read(config, "conversations.history", query, deadline)
            except RateLimited:
                raise  # waits without spending the retry budget, then looks again
            except DeliveryError as exc:
                log.warning(
                    "slack_bot: could not look for an earlier post of delivery %s (%s); posting it again",
                    delivery_id,
                    exc.detail,
                )
                return None
            for message in answer.get("messages") or []:
                if _posted_for(message, delivery_id) and isinstance(ts := message.get("ts"), str):
                    return Receipt(
                        provider_ref=make_ref(channel, ts),
                        status_code=200,
                        response_excerpt="posted by an earlier attempt whose answer was lost (conversations.history)",
                    )
            cursor = str((answer.get("response_metadata") or {}).get("next_cursor") or "")
            if not cursor:
                return None
        return None

    async def _read(
        self, config: SlackBotConfig, method: str, query: Mapping[str, str], deadline: float
    ) -> dict[str, Any]:
        """A Web API read (GET with a query); an `ok: false` answer raises its taxonomy error."""
        response = await self.http.request(
            "GET",
            f"{config.api_base_url.rstrip('/')}/{method}?{urllib.parse.urlencode(query)}",
            provider=self.name,
            headers={"authorization": f"Bearer {config.token.get_secret_value()}"},
            timeout_s=config.timeout_s,
            deadline=deadline,
        )
        return self._answer(config, method, response)[0]

    def _answer(
        self, config: SlackBotConfig, method: str, response: HttpResponse
    ) -> tuple[dict[str, Any], list[str]]:
        """A Web API answer that says `ok: true`, and the config's secrets; anything else raises its error."""
        secrets = list(secret_values(config))
        classify_status(self.name, response, secrets=secrets)
        try:
            answer = orjson.loads(response.body)
        except orjson.JSONDecodeError:
            answer = None
        if not isinstance(answer, dict):
            raise ProviderUnavailable(
                self.name,
                f"{method}: answer is not a JSON object",
                status_code=response.status,
                response_excerpt=excerpt(response.body, secrets),
            )
        if answer.get("ok") is not True:
            code = str(answer.get("error") or "unknown_error")[:64]
            if method == "chat.update" and code in _UPDATE_FALLBACK:
                raise _CannotUpdate(code)
            raise slack_error(self.name, code, response, secrets, default=InvalidPayload)
        return answer, secrets

    async def _call(
        self, config: SlackBotConfig, method: str, payload: dict[str, Any], *, deadline: float
    ) -> Receipt:
        response = await self.http.request(
            "POST",
            f"{config.api_base_url.rstrip('/')}/{method}",
            provider=self.name,
            body=orjson.dumps(payload),
            headers={
                "content-type": "application/json; charset=utf-8",
                "authorization": f"Bearer {config.token.get_secret_value()}",
            },
            timeout_s=config.timeout_s,
            deadline=deadline,
        )
        answer, secrets = self._answer(config, method, response)
        channel, ts = answer.get("channel"), answer.get("ts")
        ref = make_ref(channel, ts) if isinstance(channel, str) and isinstance(ts, str) else None
        return Receipt(
            provider_ref=ref, status_code=response.status, response_excerpt=excerpt(response.body, secrets)
        )


def _posted_for(message: Any, delivery_id: str) -> bool:
    """Whether a conversations.history message is the one the bot posted for this delivery."""
    meta = message.get("metadata") if isinstance(message, dict) else None
    if not isinstance(meta, dict) or meta.get("event_type") != METADATA_EVENT_TYPE:
        return False
    payload = meta.get("event_payload")
    return isinstance(payload, dict) and payload.get("delivery_id") == delivery_id


class _CannotUpdate(Exception):
    pass
