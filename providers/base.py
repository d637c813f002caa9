"""The provider interface: one async `send` per attempt, the same for every destination."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Generic, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, SecretStr, ValidationInfo

from providers._egress import check_config_url
from providers._http import HttpClient
from shared.rendering import RenderedMessage

MASK = "********"
#: a config without `timeout_s` (none today) gets this per attempt
DEFAULT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Receipt:
    """What a successful attempt leaves behind."""

    #: the vendor's message reference (Slack ts, Discord message id) for edit-in-place, if it has one
    provider_ref: str | None = None
    status_code: int | None = None
    response_excerpt: str | None = None
    #: multi-target providers: target -> outcome ("delivered", or an error code) for this and earlier attempts
    target_progress: Mapping[str, str] | None = None
    #: targets the vendor says are gone for good; the worker removes them from the integration's config
    removed_targets: tuple[str, ...] = ()


ConfigT = TypeVar("ConfigT", bound=BaseModel)


class Provider(ABC, Generic[ConfigT]):
    name: ClassVar[str]
    config_model: ClassVar[type[BaseModel]]
    supports_edit: ClassVar[bool] = False
    max_text_chars: ClassVar[int | None] = None

    def __init__(self, http: HttpClient) -> None:
        self.http = http

    @abstractmethod
    async def send(
        self,
        message: RenderedMessage,
        config: ConfigT,
        *,
        idempotency_key: str,
        previous_ref: str | None,
        progress: Mapping[str, str] | None = None,
        deadline: float | None = None,
    ) -> Receipt:
        """Make exactly one attempt; return a Receipt or raise a `shared.errors.DeliveryError`.

        `progress` is the per-target outcome of earlier attempts of this delivery (multi-target providers send
        only to targets not yet "delivered"); single-target providers ignore it.
        `deadline` is the `time.monotonic()` instant by which the whole attempt ends, vendor fallbacks (Slack
        edit -> post, Discord PATCH -> POST) and re-authentication included; None means
        `attempt_deadline(config)`. Past it a provider raises TransportTimeout and makes no further request.
        """

    async def aclose(self) -> None:
        """Close what this provider holds (SMTP connections, HTTP/2 clients); the worker calls it on shutdown."""
        return None

    def preview(self, message: RenderedMessage, config: ConfigT) -> dict[str, Any]:
        """What `send` would put on the wire for this message, without sending and without secrets.

        Used by the routes dry run (`POST /v1/routes/explain`). Providers override it with their real body."""
        return {"title": message.title, "text": message.text, "fields": dict(message.fields)}

    @classmethod
    def without_targets(cls, config: ConfigT, targets: Sequence[str]) -> ConfigT | None:
        """The config with `targets` removed (for `removed_targets`), or None if this provider has none."""
        return None

    @classmethod
    def on_config_update(cls, old: ConfigT, new: ConfigT, *, now: datetime | None = None) -> ConfigT:
        """The config to store when `new` replaces `old` (the webhook keeps a rotated signing secret)."""
        return new


def egress_secret_url(value: SecretStr, info: ValidationInfo) -> SecretStr:
    """Field validator: a secret URL refused at save time when its host can be refused then (_egress.py)."""
    check_config_url(value.get_secret_value(), info.context)
    return value


def egress_url(value: str | None, info: ValidationInfo) -> str | None:
    """Field validator: egress_secret_url for a plain (non-secret) URL field; None passes."""
    if value is not None:
        check_config_url(value, info.context)
    return value


def max_attempt_s(config: BaseModel) -> float:
    """The longest one attempt with this config may take: its `timeout_s`, or more for a provider whose config
    declares `max_attempt_s()` (several requests per attempt: a token fetch, then one per device). The worker
    derives its sending lease from the largest of these plus a margin."""
    # Looked up on the class: a name a model lacks goes through pydantic's __getattr__, which builds an
    # AttributeError each time (5 % of the worker's time in a thousand-integration fan-out).
    declared = getattr(type(config), "max_attempt_s", None)
    if callable(declared):
        return float(declared(config))
    return float(getattr(config, "timeout_s", DEFAULT_TIMEOUT_S))


def attempt_deadline(config: BaseModel, deadline: float | None = None) -> float:
    """`deadline`, or the one a provider computes when the worker gave none: now + max_attempt_s(config)."""
    return deadline if deadline is not None else time.monotonic() + max_attempt_s(config)


def secret_values(config: BaseModel) -> Iterator[str]:
    """Every secret string in a config, to blank out of anything we store or log.

    A secret URL also yields its path and its long path segments and query values: a vendor echoing only the
    token part (`/services/T../B../<secret>`, a Discord webhook token, a Teams `sig`) must be blanked too."""
    for value in _walk(config):
        if isinstance(value, SecretStr):
            raw = value.get_secret_value()
            yield raw
            yield from _url_parts(raw)


def _url_parts(raw: str) -> Iterator[str]:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return
    if len(parts.path) > 1:
        yield parts.path + (f"?{parts.query}" if parts.query else "")
    pieces = parts.path.split("/") + [p.partition("=")[2] for p in parts.query.split("&")]
    yield from (piece for piece in pieces if len(piece) >= 12)


def _walk(value: Any) -> Iterator[Any]:
    # The model's own fields, not a model_dump() per send (a copy of the whole config; it showed in the worker's
    # profile): the SecretStr values are the same objects either way.
    if isinstance(value, BaseModel):
        yield from _walk(value.__dict__)
        if value.__pydantic_extra__:
            yield from _walk(value.__pydantic_extra__)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _walk(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _walk(item)
    else:
        yield value


def mask_config(config: BaseModel) -> dict[str, Any]:
    """The config as the API shows it: secrets masked, a secret URL reduced to its scheme and host."""
    return _mask(config.model_dump())  # type: ignore[no-any-return]


def _mask(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _mask(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v) for v in value]
    if isinstance(value, SecretStr):
        raw = value.get_secret_value()
        parts = urlsplit(raw)
        if parts.scheme in ("http", "https") and parts.hostname:
            # Scheme, host and port stay visible (which receiver is this?); path, query and userinfo are the
            # secret part.
            host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
            try:
                port = f":{parts.port}" if parts.port is not None else ""
            except ValueError:
                port = ""
            return f"{parts.scheme}://{host}{port}/{MASK}"
        return MASK
    return value


def plain_config(config: BaseModel) -> dict[str, Any]:
    """The config with secrets revealed, for encryption at rest only (pydantic dumps SecretStr masked)."""
    return _reveal(config.model_dump(mode="python"))  # type: ignore[no-any-return]


def _reveal(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {k: _reveal(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_reveal(v) for v in value]
    return value
