"""PagerDuty Events API v2: trigger, acknowledge and resolve alerts keyed by the event's lifecycle.

Wire facts (reference/provider-protocols.md §7): POST /v2/enqueue with the 32-character routing key in the body;
202 `{"status": "success", "dedup_key": ...}`; 400 `{"status": "invalid event", "errors": [...]}`; 429 and 5xx
retryable. The `dedup_key` is the lifecycle key, so a pipeline's failure and its later success (or an incident's
trigger and resolve) land on one alert. Which event types acknowledge or resolve is configurable by pattern.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from fnmatch import fnmatchcase
from typing import Any, ClassVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from providers._http import HttpResponse, classify_status, excerpt
from providers.base import MASK, Provider, Receipt, attempt_deadline, egress_url, secret_values
from providers.render import pagerduty as render_pagerduty
from shared.errors import AuthFailed
from shared.rendering import RenderedMessage

EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
_PATTERN = r"^[a-z_.*]{1,64}$"


class PagerDutyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: the Events API v2 integration key (32 characters) of a PagerDuty service
    routing_key: SecretStr
    #: shown as the alert's source; default `herald/<project>`
    source: str | None = Field(None, min_length=1, max_length=255)
    #: event types (shell patterns) that resolve the lifecycle's alert instead of triggering one
    resolve_on: list[str] = Field(default_factory=lambda: ["pipeline.success", "*.resolved"], max_length=20)
    #: event types that acknowledge it
    acknowledge_on: list[str] = Field(default_factory=lambda: ["*.acknowledged"], max_length=20)
    #: the EU service region uses https://events.eu.pagerduty.com/v2/enqueue
    events_url: str = Field(EVENTS_URL, max_length=200, pattern=r"^https?://[^\s?#]+$")
    timeout_s: float = Field(10.0, gt=0, le=30)

    _egress = field_validator("events_url")(egress_url)

    @field_validator("routing_key")
    @classmethod
    def _routing_key(cls, value: SecretStr) -> SecretStr:
        if not re.match(r"^[A-Za-z0-9]{32}$", value.get_secret_value()):
            raise ValueError("must be a 32-character Events API v2 integration key")
        return value

    @field_validator("resolve_on", "acknowledge_on")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        for pattern in value:
            if not re.match(_PATTERN, pattern):
                raise ValueError(f"{pattern[:64]!r} is not an event type pattern (letters, '.', '_', '*')")
        return value

    def action_for(self, event_type: str) -> str:
        if any(fnmatchcase(event_type, p) for p in self.resolve_on):
            return "resolve"
        if any(fnmatchcase(event_type, p) for p in self.acknowledge_on):
            return "acknowledge"
        return "trigger"


class PagerDutyProvider(Provider[PagerDutyConfig]):
    name: ClassVar[str] = "pagerduty"
    config_model: ClassVar[type[BaseModel]] = PagerDutyConfig
    max_text_chars: ClassVar[int | None] = render_pagerduty.MAX_SUMMARY_CHARS

    def _body(self, message: RenderedMessage, config: PagerDutyConfig, routing_key: str) -> dict[str, Any]:
        return render_pagerduty.render(
            message,
            routing_key=routing_key,
            action=config.action_for(message.event_type),
            source=config.source,
        )

    def preview(self, message: RenderedMessage, config: PagerDutyConfig) -> dict[str, Any]:
        return self._body(message, config, MASK)

    async def send(
        self,
        message: RenderedMessage,
        config: PagerDutyConfig,
        *,
        idempotency_key: str,
        previous_ref: str | None,
        progress: Mapping[str, str] | None = None,
        deadline: float | None = None,
    ) -> Receipt:
        deadline = attempt_deadline(config, deadline)
        body = self._body(message, config, config.routing_key.get_secret_value())
        response = await self.http.request(
            "POST",
            config.events_url,
            provider=self.name,
            body=orjson.dumps(body),
            headers={"content-type": "application/json"},
            timeout_s=config.timeout_s,
            deadline=deadline,
        )
        secrets = list(secret_values(config))
        if response.status == 400:
            self._check_routing_key(response, secrets)
        classify_status(self.name, response, secrets=secrets, detail=_reasons(response, secrets))
        answer = _json(response)
        key = answer.get("dedup_key") if isinstance(answer.get("dedup_key"), str) else body["dedup_key"]
        return Receipt(
            provider_ref=key, status_code=response.status, response_excerpt=excerpt(response.body, secrets)
        )

    def _check_routing_key(self, response: HttpResponse, secrets: list[str]) -> None:
        # A wrong integration key comes back as an "invalid event" naming routing_key: that is a credential
        # problem, to be fixed on the integration, not a problem with this one message.
        reasons = _reasons(response, secrets) or ""
        if "routing_key" in reasons or "routing key" in reasons.lower():
            raise AuthFailed(
                self.name,
                f"routing key refused ({reasons})",
                status_code=response.status,
                response_excerpt=excerpt(response.body, secrets),
            )


def _reasons(response: HttpResponse, secrets: list[str]) -> str | None:
    """PagerDuty's `errors` list, joined and redacted, for the attempt's detail."""
    errors = _json(response).get("errors")
    if not isinstance(errors, list) or not errors:
        return None
    return excerpt("; ".join(str(e)[:200] for e in errors), secrets)[:300]


def _json(response: HttpResponse) -> dict[str, Any]:
    try:
        answer = orjson.loads(response.body)
    except orjson.JSONDecodeError:
        return {}
    return answer if isinstance(answer, dict) else {}
