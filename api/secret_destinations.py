"""Changing where a secret goes requires the secret again (as GitHub does for webhook secrets).

An admin who may edit an integration but not read its secrets (the API masks them) could otherwise point the
URL, API base or host somewhere of their own and keep the stored headers, tokens or passwords: the next
delivery would hand them over. So an update that changes a destination while keeping a stored secret (omitted,
or sent back masked) is refused with 422 `secret_required`, naming the destination and the secrets to send.

The rule is generic over provider configs, read from the config models themselves:
- a *destination* is a field whose name ends in `url`, `uri`, `host`, `base` or `endpoint` (`webhook_url`,
  `api_base_url`, `host`, `endpoint_url`, a service account's `token_uri`), secret or not; a config class may
  name its destination fields exactly instead, as `destination_fields: ClassVar[frozenset[str]]` (dotted paths);
- a URL destination changes when its scheme, host or port does (a new path on the same host reaches the same
  party); any other destination when its value does;
- a secret is every `SecretStr` in the config, nested ones included (header values, a service account's key).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, SecretStr

from api.errors import ApiError
from providers.base import mask_config

_DESTINATION_NAME = re.compile(r"(url|uri|host|base|endpoint)$")

Path = tuple[str, ...]


def _dotted(path: Path) -> str:
    return ".".join(path)


def _destinations(model: BaseModel, prefix: Path = ()) -> Iterator[tuple[Path, Any]]:
    declared: frozenset[str] | None = getattr(type(model), "destination_fields", None)
    for name in type(model).model_fields:
        value = getattr(model, name)
        path = (*prefix, name)
        if isinstance(value, BaseModel):
            yield from _destinations(value, path)
        elif (name in declared) if declared is not None else bool(_DESTINATION_NAME.search(name)):
            yield path, value.get_secret_value() if isinstance(value, SecretStr) else value


def _where(value: Any) -> Any:
    """What decides who receives a request: scheme, host and port for a URL, else the value itself."""
    if isinstance(value, str):
        parts = urlsplit(value)
        if parts.scheme and parts.hostname:
            try:
                port = parts.port
            except ValueError:
                port = None
            return (parts.scheme.lower(), parts.hostname.lower().rstrip("."), port)
        return value.strip().lower().rstrip(".")
    return value


def _secrets(value: Any, path: Path = ()) -> Iterator[tuple[Path, str]]:
    if isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _secrets(getattr(value, name), (*path, name))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _secrets(item, (*path, str(key)))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _secrets(item, (*path, str(index)))
    elif isinstance(value, SecretStr):
        yield path, value.get_secret_value()


def _lookup(tree: Any, path: Path) -> tuple[bool, Any]:
    for key in path:
        if isinstance(tree, dict) and key in tree:
            tree = tree[key]
        elif isinstance(tree, list) and key.isdigit() and int(key) < len(tree):
            tree = tree[int(key)]
        else:
            return False, None
    return True, tree


def check_secret_destinations(old: BaseModel, new: BaseModel, sent: dict[str, Any]) -> None:
    """Refuse `new` if it moves a destination of `old` while a secret of `old` is kept without being sent.

    `sent` is the config as the request gave it (before stored values were merged in)."""
    before = dict(_destinations(old))
    moved = [
        path for path, value in _destinations(new) if path in before and _where(before[path]) != _where(value)
    ]
    moved += [path for path in before if path not in dict(_destinations(new))]
    if not moved:
        return
    masked = mask_config(old)
    stored = dict(_secrets(old))
    kept: list[Path] = []
    for path, value in _secrets(new):
        if stored.get(path) != value:
            continue  # a new secret: the request supplied it
        given, raw = _lookup(sent, path)
        _, shown = _lookup(masked, path)
        if not given or raw == shown:
            kept.append(path)
    if kept:
        raise ApiError(
            422,
            "secret_required",
            f"config.{_dotted(moved[0])}: changing where secrets are sent requires them again; send "
            + ", ".join(f"config.{_dotted(p)}" for p in kept),
        )
