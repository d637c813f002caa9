"""Which vendor-side limit a send counts against (its destination) and that limit's documented default rate.

Pacing (workers/pacing.py) keeps one limiter per destination, shared by every worker process, so the key must
name what the vendor limits: a Slack webhook or channel, a Discord webhook id, a PagerDuty routing key, an SMTP
relay, an APNs topic or FCM project, a generic webhook's host + path. The key is a hash of those parts: they
often hold secrets (a Slack webhook URL, a routing key) and keys are stored in Redis and shown in metrics.

Default rates come from /work/shared/reference/provider-protocols.md (the vendors' documentation):
Slack ~1/s per webhook or channel with short bursts; Discord webhooks 5 per 2 s; Teams connectors 4 per 1 s
up to 1800/day; PagerDuty Events ~120/min per routing key; SES 14/s (the smallest production send rate).
A provider without a documented limit (generic webhook, SMTP, APNs, FCM) has none by default. An integration
overrides its rate with the `pace_per_s`/`pace_burst` columns.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from pydantic import BaseModel, SecretStr


@dataclass(frozen=True)
class Rate:
    """`per_s` sends per second on average, `burst` of them back to back."""

    per_s: float
    burst: int = 1


#: The pace per destination, by provider name (None: no documented limit). Each is ~90 % of the vendor's
#: documented limit, and bursts stay within the vendor's window: a vendor counts arrivals in a sliding window,
#: and network jitter between workers must not push two sends into one window.
DEFAULT_RATES: dict[str, Rate | None] = {
    "slack": Rate(0.9, 1),  # 1/s per webhook, "short bursts" of unstated size
    "slack_bot": Rate(0.9, 1),  # about 1/s per channel
    "discord": Rate(2.25, 1),  # 5 per 2 s per webhook
    "teams": Rate(0.02, 4),  # 4/1 s and 60/30 s, but also 100/h and 1800/day: the daily quota is the pace
    "pagerduty": Rate(1.8, 10),  # about 120/min per routing key
    "email_ses": Rate(12.0, 1),  # 14/s: the smallest production account's send rate
    "webhook": None,
    "email_smtp": None,
    "apns": None,
    "fcm": None,
}


def _text(value: object) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return "" if value is None else str(value)


def _host_path(url: object) -> str:
    parts = urlsplit(_text(url))
    return f"{(parts.hostname or '').lower()}:{parts.port or ''}{parts.path}"


def _field(config: BaseModel, name: str) -> str:
    return _text(getattr(config, name, None))


def _discord(config: BaseModel) -> str:
    # /api/webhooks/{id}/{token}: Discord limits per webhook id.
    path = urlsplit(_field(config, "webhook_url")).path.strip("/").split("/")
    return path[2] if len(path) > 2 else _host_path(_field(config, "webhook_url"))


def _fcm(config: BaseModel) -> str:
    account = getattr(config, "service_account", None)
    return _text(getattr(account, "project_id", None))


def _whole(config: BaseModel) -> str:
    # An unknown provider: its whole config (hashed) is its destination.
    return config.model_dump_json()


_PARTS: dict[str, Callable[[BaseModel], str]] = {
    "slack": lambda c: _host_path(_field(c, "webhook_url")) + "#" + _field(c, "channel"),
    "slack_bot": lambda c: _field(c, "api_base_url") + "#" + _field(c, "token") + "#" + _field(c, "channel"),
    "discord": _discord,
    "teams": lambda c: _host_path(_field(c, "webhook_url")),
    "webhook": lambda c: _host_path(_field(c, "url")),
    "pagerduty": lambda c: _host_path(_field(c, "events_url")) + "#" + _field(c, "routing_key"),
    "email_smtp": lambda c: _field(c, "host").lower() + ":" + _field(c, "port"),
    "email_ses": lambda c: _field(c, "region") + "#" + _field(c, "access_key_id"),
    "apns": lambda c: _field(c, "team_id") + "#" + _field(c, "topic"),
    "fcm": _fcm,
}


def destination_key(provider: str, config: BaseModel) -> str:
    """`provider:hash` naming the vendor-side limit this config's sends count against; never a secret."""
    parts = _PARTS.get(provider, _whole)(config)
    return f"{provider}:{hashlib.sha256(parts.encode()).hexdigest()[:20]}"


def default_rate(provider: str) -> Rate | None:
    return DEFAULT_RATES.get(provider)
