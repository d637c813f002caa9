"""The provider interface: one async `send` per attempt, the same for every destination."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, SecretStr

from providers._http import HttpClient
from shared.rendering import RenderedMessage

MASK = "********"


@dataclass(frozen=True)
class Receipt:
    """What a successful attempt leaves behind."""

    #: the vendor's message reference (Slack ts, Discord message id) for edit-in-place, if it has one
    provider_ref: str | None = None
    status_code: int | None = None
    response_excerpt: str | None = None


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
    ) -> Receipt:
        """Make exactly one attempt; return a Receipt or raise a `shared.errors.DeliveryError`."""


def secret_values(config: BaseModel) -> Iterator[str]:
    """Every secret string in a config, to blank out of anything we store or log."""
    for value in _walk(config.model_dump()):
        if isinstance(value, SecretStr):
            yield value.get_secret_value()


def _walk(value: Any) -> Iterator[Any]:
    if isinstance(value, dict):
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
            return f"{parts.scheme}://{parts.hostname}/{MASK}"
        return MASK
    return value
