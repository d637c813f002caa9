"""Microsoft Teams: the Workflows webhook and the legacy Office 365 connector, both fed an Adaptive Card.

Wire facts (reference/provider-protocols.md §3):
- Workflows ("When a Teams webhook request is received"): 202 Accepted with an empty body. Posting happens
  later, so 202 means accepted, not shown.
- Legacy connector (`*.webhook.office.com/webhookb2/...`): 200 with the body `1` is success. Throttling is NOT a
  429 status: it is a 200 whose body says "Microsoft Teams endpoint returned HTTP error 429"; likewise 413 for
  oversized cards. Any other 200 body is a failure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from providers._http import HttpResponse, classify_status, excerpt
from providers.base import Provider, Receipt, attempt_deadline, egress_secret_url, secret_values
from providers.render import teams as render_teams
from shared.errors import ProviderUnavailable
from shared.rendering import RenderedMessage

# "Microsoft Teams endpoint returned HTTP error 429 with ContextId ..." and its 413/5xx siblings
_EMBEDDED_STATUS = re.compile(r"HTTP error (\d{3})")
_CONNECTOR_HOSTS = ("webhook.office.com", "outlook.office.com", "outlook.office365.com")


class TeamsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: a Workflows trigger URL (its `sig` parameter is the credential) or a legacy connector URL
    webhook_url: SecretStr
    #: how to read the answer; `auto` decides from the URL's host (connectors live under webhook.office.com)
    flavor: Literal["auto", "workflows", "connector"] = "auto"
    timeout_s: float = Field(10.0, gt=0, le=30)

    _egress = field_validator("webhook_url")(egress_secret_url)

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, value: SecretStr) -> SecretStr:
        raw = value.get_secret_value()
        if not re.match(r"^https?://[^\s/?#]+\S*$", raw) or len(raw) > 4096:
            raise ValueError("must be an http(s) URL of at most 4096 characters")
        return value

    def resolved_flavor(self) -> Literal["workflows", "connector"]:
        if self.flavor != "auto":
            return self.flavor
        host = (urlsplit(self.webhook_url.get_secret_value()).hostname or "").lower()
        is_connector = any(host == h or host.endswith("." + h) for h in _CONNECTOR_HOSTS)
        return "connector" if is_connector else "workflows"


class TeamsProvider(Provider[TeamsConfig]):
    name: ClassVar[str] = "teams"
    config_model: ClassVar[type[BaseModel]] = TeamsConfig
    max_text_chars: ClassVar[int | None] = render_teams.MAX_TEXT_CHARS

    def preview(self, message: RenderedMessage, config: TeamsConfig) -> dict[str, Any]:
        return render_teams.render(message)

    async def send(
        self,
        message: RenderedMessage,
        config: TeamsConfig,
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
            body=orjson.dumps(render_teams.render(message)),
            headers={"content-type": "application/json"},
            timeout_s=config.timeout_s,
            deadline=deadline,
        )
        secrets = list(secret_values(config))
        classify_status(self.name, response, secrets=secrets)
        text = response.text().strip()
        if embedded := _EMBEDDED_STATUS.search(text[:2000]):
            # The connector's 200-with-an-error: classify the status it reports, as if it had been the real one.
            status = int(embedded.group(1))
            reported = HttpResponse(status, response.headers, response.body)
            classify_status(self.name, reported, secrets=secrets, detail=f"connector reported HTTP {status}")
        if config.resolved_flavor() == "connector" and text != "1":
            # Retried rather than dropped: the attempt budget bounds it.
            raise ProviderUnavailable(
                self.name,
                "connector answered 200 without the success body '1'",
                status_code=response.status,
                response_excerpt=excerpt(response.body, secrets),
            )
        return Receipt(status_code=response.status, response_excerpt=excerpt(response.body, secrets))
