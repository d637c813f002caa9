"""Every rule of PushGo's Message, Event and Thing routes (seed 002 and reference/pushgo-api.md), as one
pure function: `validate(route, body) -> dict` of normalised fields, or a `GatewayInvalid` with a specific
`error_code` and the field it is about. Each rule's code is listed in docs/lifecycles.md.

Normalisation: timestamps become Unix seconds (float; milliseconds recognised by magnitude), tags and images
are trimmed, emptied entries dropped and duplicates removed (first kept), an empty `description` is absent,
an unknown `severity` on `/message` falls back to `normal` (PushGo's documented behaviour).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from shared.channels import CHANNEL_ID_RE, PASSWORD_MAX_CHARS, PASSWORD_MIN_CHARS
from shared.events import GATEWAY_SEVERITIES

MAX_BODY_BYTES = 32 * 1024
OP_ID_RE = re.compile(r"^[A-Za-z0-9_:\-]{1,128}$")
OBJECT_ID_RE = re.compile(r"^[A-Za-z0-9_:\-]{1,64}$")
EXTERNAL_ID_KEY_RE = re.compile(r"^[A-Za-z0-9_:.\-]{1,64}$")
URL_RE = re.compile(r"^https?://\S+$")
MAX_LIST_ITEMS = 32
MAX_TAG_CHARS = 64
MAX_URL_CHARS = 2048
MAX_META_KEY_CHARS = 64
MAX_META_VALUE_CHARS = 512
MAX_ATTR_VALUE_CHARS = 1024
MAX_ATTR_KEYS = 128
MAX_EXTERNAL_ID_CHARS = 256
# Milliseconds since 1970 pass 1e11 in 1973; seconds will not reach it before the year 5138.
_MS_THRESHOLD = 1e11
_MAX_UNIX_S = 253402300799.0  # 9999-12-31T23:59:59Z


class GatewayInvalid(Exception):
    """A 400: `error_code` names the rule, `field` the offending field."""

    def __init__(self, error_code: str, field: str, message: str) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.field = field
        self.message = message


def _bad(code: str, field: str, message: str) -> GatewayInvalid:
    return GatewayInvalid(code, field, f"{field}: {message}")


# --- field validators: (field name, value) -> normalised value (None = treat as absent) ---


def _string(max_chars: int, *, non_empty: bool = True) -> Callable[[str, Any], str | None]:
    def check(name: str, value: Any) -> str | None:
        if not isinstance(value, str):
            raise _bad("invalid_type", name, "must be a string")
        if non_empty and not value.strip():
            raise _bad("empty_field", name, "must not be empty")
        if len(value) > max_chars:
            raise _bad("field_too_long", name, f"at most {max_chars} characters")
        return value

    return check


def _description(name: str, value: Any) -> str | None:
    text = _string(4096, non_empty=False)(name, value)
    return text or None  # empty description = absent (seed 002)


def _pattern(regex: re.Pattern[str], what: str) -> Callable[[str, Any], str]:
    def check(name: str, value: Any) -> str:
        if not isinstance(value, str):
            raise _bad("invalid_type", name, "must be a string")
        if not regex.fullmatch(value):
            raise _bad("invalid_id", name, what)
        return value

    return check


def _password(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _bad("invalid_type", name, "must be a string")
    if not PASSWORD_MIN_CHARS <= len(value) <= PASSWORD_MAX_CHARS:
        raise _bad("invalid_password", name, f"must be {PASSWORD_MIN_CHARS}-{PASSWORD_MAX_CHARS} characters")
    return value


def _url(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _bad("invalid_type", name, "must be a string")
    url: str = value.strip()
    if len(url) > MAX_URL_CHARS:
        raise _bad("field_too_long", name, f"at most {MAX_URL_CHARS} characters")
    if not URL_RE.fullmatch(url):
        raise _bad("invalid_url", name, "must be an http(s) URL")
    return url


def timestamp(name: str, value: Any) -> float:
    """Unix seconds or milliseconds (by magnitude), as seconds."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad("invalid_timestamp", name, "must be a Unix time in seconds or milliseconds (a number)")
    seconds = float(value) / 1000 if value >= _MS_THRESHOLD else float(value)
    if not 0 < seconds <= _MAX_UNIX_S:
        raise _bad("invalid_timestamp", name, "is out of range")
    return seconds


def _event_severity(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _bad("invalid_type", name, "must be a string")
    if value not in GATEWAY_SEVERITIES:
        raise _bad("invalid_severity", name, f"must be one of {', '.join(GATEWAY_SEVERITIES)}")
    return value


def _message_severity(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _bad("invalid_type", name, "must be a string")
    return value if value in GATEWAY_SEVERITIES else "normal"


def _string_list(item_chars: int, *, urls: bool) -> Callable[[str, Any], list[str]]:
    def check(name: str, value: Any) -> list[str]:
        if not isinstance(value, list):
            raise _bad("invalid_type", name, "must be an array of strings")
        seen: dict[str, None] = {}
        for index, item in enumerate(value):
            where = f"{name}[{index}]"
            if not isinstance(item, str):
                raise _bad("invalid_type", where, "must be a string")
            item = item.strip()
            if not item:
                continue
            if len(item) > item_chars:
                raise _bad("field_too_long", where, f"at most {item_chars} characters")
            if urls and not URL_RE.fullmatch(item):
                raise _bad("invalid_url", where, "must be an http(s) URL")
            seen.setdefault(item, None)
        if len(seen) > MAX_LIST_ITEMS:
            raise _bad("too_many_items", name, f"at most {MAX_LIST_ITEMS} distinct items")
        return list(seen)

    return check


def _scalar(value: Any) -> bool:
    return isinstance(value, str | bool | int | float)


def _metadata(name: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad("invalid_type", name, "must be an object")
    for key, item in value.items():
        if not 0 < len(key) <= MAX_META_KEY_CHARS:
            raise _bad("invalid_key", f"{name}.{key[:64]}", f"keys are 1-{MAX_META_KEY_CHARS} characters")
        if not _scalar(item):
            raise _bad("metadata_not_scalar", f"{name}.{key}", "values are strings, numbers or booleans")
        if isinstance(item, str) and len(item) > MAX_META_VALUE_CHARS:
            raise _bad("field_too_long", f"{name}.{key}", f"at most {MAX_META_VALUE_CHARS} characters")
    return value


def _attr_value(where: str, value: Any, depth: int) -> None:
    if isinstance(value, list):
        raise _bad("attrs_array", where, "arrays are not allowed in attrs")
    if isinstance(value, dict):
        if depth >= 1:
            raise _bad("attrs_too_deep", where, "attrs allow one level of nesting")
        for key, item in value.items():
            _attr_key(f"{where}.{key[:64]}", key)
            _attr_value(f"{where}.{key}", item, depth + 1)
        return
    if value is not None and not _scalar(value):
        raise _bad("invalid_type", where, "must be a string, number, boolean, object or null")
    if isinstance(value, str) and len(value) > MAX_ATTR_VALUE_CHARS:
        raise _bad("field_too_long", where, f"at most {MAX_ATTR_VALUE_CHARS} characters")


def _attr_key(where: str, key: str) -> None:
    if not 0 < len(key) <= MAX_META_KEY_CHARS:
        raise _bad("invalid_key", where, f"keys are 1-{MAX_META_KEY_CHARS} characters")


def _attrs(name: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad("invalid_type", name, "must be an object (a patch: null deletes a key)")
    if len(value) > MAX_ATTR_KEYS:
        raise _bad("too_many_attrs", name, f"at most {MAX_ATTR_KEYS} keys")
    for key, item in value.items():
        _attr_key(f"{name}.{key[:64]}", key)
        _attr_value(f"{name}.{key}", item, 0)
    return value


def _external_ids(name: str, value: Any) -> dict[str, str | None]:
    if not isinstance(value, dict):
        raise _bad("invalid_type", name, "must be an object")
    for key, item in value.items():
        if not EXTERNAL_ID_KEY_RE.fullmatch(key):
            raise _bad("invalid_key", f"{name}.{key[:64]}", "keys are 1-64 of letters, digits, _ : . -")
        if item is not None and not isinstance(item, str):
            raise _bad("invalid_type", f"{name}.{key}", "values are strings (null deletes)")
        if isinstance(item, str) and len(item) > MAX_EXTERNAL_ID_CHARS:
            raise _bad("field_too_long", f"{name}.{key}", f"at most {MAX_EXTERNAL_ID_CHARS} characters")
    return value


FIELDS: dict[str, Callable[[str, Any], Any]] = {
    "channel_id": _pattern(CHANNEL_ID_RE, "1-64 of letters, digits, _ : -"),
    "password": _password,
    "op_id": _pattern(OP_ID_RE, "1-128 of letters, digits, _ : -"),
    "ciphertext": _string(24 * 1024),
    "event_id": _pattern(OBJECT_ID_RE, "1-64 of letters, digits, _ : -"),
    "thing_id": _pattern(OBJECT_ID_RE, "1-64 of letters, digits, _ : -"),
    "title": _string(256),
    "description": _description,
    "status": _string(24),
    "message": _string(512),
    "body": _string(8192, non_empty=False),
    "url": _url,
    "primary_image": _url,
    "location_type": _string(32),
    "location_value": _string(512),
    "tags": _string_list(MAX_TAG_CHARS, urls=False),
    "images": _string_list(MAX_URL_CHARS, urls=True),
    "metadata": _metadata,
    "attrs": _attrs,
    "external_ids": _external_ids,
    "event_time": timestamp,
    "started_at": timestamp,
    "ended_at": timestamp,
    "observed_at": timestamp,
    "occurred_at": timestamp,
    "created_at": timestamp,
    "deleted_at": timestamp,
    "ttl": timestamp,
}

_COMMON = frozenset({"channel_id", "password", "op_id", "ciphertext"})
_EVENT = _COMMON | {"thing_id", "title", "description", "status", "message", "severity", "event_time"}
_EVENT |= {"tags", "images", "attrs", "metadata"}
_THING = _COMMON | {"title", "description", "tags", "primary_image", "images", "attrs", "metadata"}
_THING |= {"external_ids", "location_type", "location_value", "observed_at"}
_MESSAGE = _COMMON | {"title", "body", "severity", "url", "images", "tags", "ttl", "thing_id", "occurred_at"}
_MESSAGE |= {"metadata"}

#: route -> (allowed fields, required fields)
ROUTES: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "/message": (_MESSAGE, frozenset({"channel_id", "password", "title"})),
    "/event/create": (
        _EVENT | {"started_at"},
        frozenset({"channel_id", "password", "title", "status", "message", "severity", "event_time"}),
    ),
    "/event/update": (
        _EVENT | {"event_id"},
        frozenset({"channel_id", "password", "event_id", "status", "message", "severity", "event_time"}),
    ),
    "/event/close": (
        _EVENT | {"event_id", "ended_at"},
        frozenset({"channel_id", "password", "event_id", "status", "message", "severity", "event_time"}),
    ),
    "/thing/create": (_THING | {"created_at"}, frozenset({"channel_id", "password", "observed_at"})),
    "/thing/update": (
        _THING | {"thing_id"},
        frozenset({"channel_id", "password", "thing_id", "observed_at"}),
    ),
    "/thing/archive": (
        _THING | {"thing_id"},
        frozenset({"channel_id", "password", "thing_id", "observed_at"}),
    ),
    "/thing/delete": (
        _THING | {"thing_id", "deleted_at"},
        frozenset({"channel_id", "password", "thing_id", "observed_at"}),
    ),
}
#: fields that exist on some gateway route: on another route they are refused with `<field>_not_allowed`
_ROUTE_ONLY = frozenset().union(*(allowed for allowed, _ in ROUTES.values()))
# Rules checked in this order, so the first error a client sees is stable.
_ORDER = (
    "channel_id",
    "password",
    "op_id",
    "event_id",
    "thing_id",
    "title",
    "status",
    "message",
    "severity",
    "event_time",
    "observed_at",
)


def validate(route: str, body: Any) -> dict[str, Any]:
    """The body of a gateway `route`, checked and normalised (see the module docstring)."""
    if not isinstance(body, dict):
        raise GatewayInvalid("invalid_body", "body", "the body must be a JSON object")
    allowed, required = ROUTES[route]
    for name in body:
        if name not in allowed:
            if name in _ROUTE_ONLY:
                raise GatewayInvalid(f"{name}_not_allowed", name, f"{name}: not allowed on {route}")
            raise GatewayInvalid("unknown_field", name[:64], f"{name[:64]}: unknown field")
    for name in sorted(required, key=lambda n: (_ORDER.index(n) if n in _ORDER else 99, n)):
        if body.get(name) is None:
            raise GatewayInvalid("missing_field", name, f"{name}: required on {route}")
    out: dict[str, Any] = {}
    for name in sorted(body, key=lambda n: (_ORDER.index(n) if n in _ORDER else 99, n)):
        value = body[name]
        if value is None:
            continue  # an explicit null is the same as absent (required ones were checked above)
        if name == "severity":
            check = _message_severity if route == "/message" else _event_severity
            out[name] = check(name, value)
            continue
        normalised = FIELDS[name](name, value)
        if normalised is not None:
            out[name] = normalised
    if route == "/message" and "thing_id" in out and "occurred_at" not in out:
        raise GatewayInvalid("occurred_at_required", "occurred_at", "occurred_at: required with thing_id")
    if ("location_type" in out) != ("location_value" in out):
        raise GatewayInvalid(
            "location_incomplete", "location_type", "location_type and location_value come together"
        )
    if route == "/message":
        out.setdefault("severity", "normal")
    return out
