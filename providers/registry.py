"""Provider name -> "module:Class", imported lazily so the API can validate configs without loading vendors.

Adding a provider: write `providers/<name>.py`, add one line here, add its fake under tests/fakes/.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from functools import cache
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from providers._egress import ALLOW_CIDRS_CONTEXT

if TYPE_CHECKING:
    from providers.base import Provider

PROVIDERS: dict[str, str] = {
    "webhook": "providers.webhook:WebhookProvider",
    "smtp": "providers.email_smtp:SmtpProvider",
    "ses": "providers.email_ses:SesProvider",
    "apns": "providers.apns:ApnsProvider",
    "fcm": "providers.fcm:FcmProvider",
    "slack": "providers.slack:SlackWebhookProvider",
    "slack_bot": "providers.slack:SlackBotProvider",
    "discord": "providers.discord:DiscordProvider",
    "teams": "providers.teams:TeamsProvider",
    "pagerduty": "providers.pagerduty:PagerDutyProvider",
}


class UnknownProvider(KeyError):
    pass


def names() -> list[str]:
    return sorted(PROVIDERS)


@cache
def provider_class(name: str) -> type[Provider[BaseModel]]:
    try:
        target = PROVIDERS[name]
    except KeyError:
        raise UnknownProvider(name) from None
    module_name, _, class_name = target.partition(":")
    cls: type[Provider[BaseModel]] = getattr(importlib.import_module(module_name), class_name)
    return cls


def config_model(name: str) -> type[BaseModel]:
    return provider_class(name).config_model


def validate_input_config(name: str, data: Any, *, egress_allow_cidrs: Sequence[str]) -> BaseModel:
    """A config as typed by a user (API input): unknown keys refused, and IP-literal destinations the egress
    policy (`egress_allow_cidrs`, the process's HERALD_EGRESS_ALLOW_CIDRS) refuses are refused now, at save time.
    Raises pydantic's ValidationError (the API turns it into a 422 naming the field)."""
    return config_model(name).model_validate(data, context={ALLOW_CIDRS_CONTEXT: list(egress_allow_cidrs)})


def load_stored_config(name: str, data: Any) -> BaseModel:
    """A config read back from the database: keys a newer version no longer knows are dropped, not fatal.

    Input is validated strictly (`validate_input_config`, extra="forbid"); a stored config written before a key
    was removed must still load, or every delivery of that integration would fail as "unreadable"."""
    model = config_model(name)
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if k in model.model_fields}
    return model.model_validate(data)
