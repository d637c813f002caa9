"""Provider name -> "module:Class", imported lazily so the API can validate configs without loading vendors.

Adding a provider: write `providers/<name>.py`, add one line here, add its fake under tests/fakes/.
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import TYPE_CHECKING

from pydantic import BaseModel

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
