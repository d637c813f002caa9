"""An integration's config form, generated from the provider's pydantic config model (the one the API validates
with, `providers.registry.config_model`), and the way back: form fields to the config dict the API takes.

Field kinds: `secret` (SecretStr: a password input, never pre-filled, its masked value shown as a hint),
`secret_json` (a JSON object holding secrets, e.g. webhook headers or an FCM service account: a textarea that is
never pre-filled), `bool` (checkbox), `choice` (Literal: a select), `number`, `list` (one value per line),
`json` (other objects) and `text`. Nothing here validates: the API's validation does, and its 422 message is
shown under the field it names.
"""

from __future__ import annotations

import datetime as dt
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from providers import registry

FieldKind = Literal["secret", "secret_json", "bool", "choice", "number", "list", "json", "text"]
FORM_PREFIX = "cfg."


@dataclass(frozen=True)
class ConfigField:
    name: str
    label: str
    kind: FieldKind
    required: bool
    default: Any
    #: the Literal's values as the model takes them (an int stays an int)
    choices: tuple[Any, ...] = ()
    description: str | None = None

    @property
    def input_name(self) -> str:
        return FORM_PREFIX + self.name

    @property
    def input_id(self) -> str:
        return "cfg-" + self.name

    @property
    def is_secret(self) -> bool:
        return self.kind in ("secret", "secret_json")

    def display(self, value: Any) -> str:
        """A value (as typed back, or as the API shows it masked) as the input's text."""
        if value is None:
            return ""
        if self.kind == "list" and isinstance(value, list):
            return "\n".join(str(v) for v in value)
        if self.kind == "json" and not isinstance(value, str):
            return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()
        return str(value)


def _args(annotation: Any) -> tuple[Any, ...]:
    """The members of `X | None` (or the annotation itself)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return tuple(a for a in typing.get_args(annotation) if a is not type(None))
    return (annotation,)


def _holds_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return any(_holds_secret(f.annotation) for f in annotation.model_fields.values())
    return any(_holds_secret(a) for a in typing.get_args(annotation))


def _kind(annotation: Any) -> tuple[FieldKind, tuple[Any, ...]] | None:
    members = _args(annotation)
    base = members[0] if len(members) == 1 else None
    if base is SecretStr:
        return "secret", ()
    if _holds_secret(annotation):
        return "secret_json", ()
    if base is bool:
        return "bool", ()
    if typing.get_origin(base) is Literal:
        return "choice", typing.get_args(base)
    if base in (int, float):
        return "number", ()
    if typing.get_origin(base) is list:
        return "list", ()
    if base is dt.datetime:
        return None  # set by Herald itself (e.g. when a signing secret was rotated), never typed
    if base is str:
        return "text", ()
    return "json", ()


_WORDS = {"url": "URL", "id": "ID", "api": "API", "s": "(seconds)", "ttl": "TTL", "cc": "CC"}


def _label(name: str) -> str:
    words = [_WORDS.get(w, w) for w in name.split("_")]
    text = " ".join(words)
    return text[:1].upper() + text[1:]


def _field(name: str, info: FieldInfo) -> ConfigField | None:
    kind = _kind(info.annotation)
    if kind is None:
        return None
    default = None if info.is_required() else info.get_default(call_default_factory=True)
    if isinstance(default, SecretStr):
        default = None
    return ConfigField(
        name=name,
        label=_label(name),
        kind=kind[0],
        required=info.is_required(),
        default=default,
        choices=kind[1],
        description=info.description,
    )


def fields_of(provider: str) -> list[ConfigField]:
    """The form's fields for a provider: required ones first, in the model's order within each group."""
    model = registry.config_model(provider)
    out = [f for name, info in model.model_fields.items() if (f := _field(name, info)) is not None]
    return sorted(out, key=lambda f: not f.required)


class FormValueError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _parse(field: ConfigField, raw: str) -> Any:
    if field.kind == "choice":
        return next((v for v in field.choices if str(v) == raw), raw)
    if field.kind == "list":
        return [line.strip() for line in raw.splitlines() if line.strip()]
    if field.kind in ("json", "secret_json"):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise FormValueError(field.name, "not valid JSON") from None
    if field.kind == "number":
        # An unparsable number is passed on as typed: the API's validation names the problem.
        for parse in (int, float):
            try:
                return parse(raw)
            except ValueError:
                continue
        return raw
    return raw


def config_from_form(
    provider: str, form: typing.Mapping[str, Any], *, editing: bool
) -> tuple[dict[str, Any], dict[str, str]]:
    """(config for the API, what was typed: to re-fill the form after a 422, secrets left out).

    Creating: an empty field is left out (its default applies; a required one is reported missing by the
    API). Editing (PATCH): an empty secret is left out (the stored one is kept); any other empty field is
    sent as null or its default, so clearing it clears it."""
    config: dict[str, Any] = {}
    typed: dict[str, str] = {}
    for field in fields_of(provider):
        if field.kind == "bool":
            config[field.name] = form.get(field.input_name) in ("on", "true", "1")
            typed[field.name] = "on" if config[field.name] else ""
            continue
        raw = str(form.get(field.input_name) or "")
        if not field.is_secret:
            typed[field.name] = raw
        if raw.strip():
            config[field.name] = _parse(field, raw.strip())
        elif editing and not field.is_secret and not field.required:
            config[field.name] = field.default
    return config, typed
