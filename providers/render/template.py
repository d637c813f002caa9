"""User payload templates for the generic webhook: JSON with `{{variable}}` placeholders, rendered safely.

How a template can never produce invalid JSON: it is parsed as JSON first (a trailing comma before `]` or `}` is
forgiven, as seed 003's RingCentral sample has one), and only the string values are Jinja templates. Each renders
to a Python string that the JSON serialiser escapes, so a value holding quotes, backslashes or newlines stays
inside its string. Jinja runs in its SandboxedEnvironment (no attribute tricks, no imports) with an allow-list
of filters and bounded `*`, `**` and `range`, so a template cannot exhaust the worker either.

Variables are the same for every event (`COMMON_VARIABLES`) plus per kind (`KIND_VARIABLES`); seed 003's Devtron
names (`devtronAppName`, `eventType`, ...) are aliases (`ALIASES`). docs/providers.md lists them all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

import orjson
from jinja2 import TemplateSyntaxError, meta
from jinja2.exceptions import SecurityError
from jinja2.exceptions import TemplateError as JinjaTemplateError
from jinja2.runtime import Undefined
from jinja2.sandbox import SandboxedEnvironment

from shared.rendering import RenderedMessage

MAX_TEMPLATE_CHARS = 32 * 1024
MAX_RENDERED_BYTES = 256 * 1024
MAX_REPEAT_CHARS = 10_000
MAX_RANGE = 1000
MAX_EXPONENT = 64

COMMON_VARIABLES: dict[str, str] = {
    "event_id": "the event's id (UUID)",
    "event_type": "e.g. release.created, pipeline.failure",
    "kind": "release | pipeline | incident",
    "project": "the project the event belongs to",
    "environment": "the environment (may be empty for CI events)",
    "severity": "info | warning | error | critical",
    "created_at": "when Herald accepted the event (ISO 8601, UTC)",
    "title": "the one-line summary Herald renders for chat",
    "text": "the longer text (release description, incident message; may be empty)",
    "link": "the link back to the source (the event's url; may be empty)",
    "footer": "e.g. 'Herald · checkout'",
    "lifecycle_key": "the key that ties related events together (trigger -> success)",
    "fields": "list of {name, value}: the facts shown as fields in chat",
    "data": "the whole event as a mapping (data.version, data.app, ...)",
}
KIND_VARIABLES: dict[str, dict[str, str]] = {
    "release": {
        "version": "the released version",
        "mandatory": "true when the release is mandatory",
        "description": "release notes",
        "from_environment": "release.promoted: where it was promoted from",
        "rollout_percent": "release.rollout_changed: the new percentage",
        "previous_rollout_percent": "release.rollout_changed: the old percentage",
        "url": "link to the release",
    },
    "pipeline": {
        "app": "the application",
        "pipeline": "the pipeline's name",
        "pipeline_type": "ci | cd",
        "stage": "trigger | success | failure",
        "cluster": "the cluster deployed to",
        "triggered_by": "who triggered it (an email)",
        "image_repo": "container image repository",
        "image_tag": "container image tag",
        "url": "link to the pipeline run",
    },
    "incident": {
        "message": "the incident's message",
        "url": "link to the incident",
    },
}
#: seed 003's Devtron variable names -> the first of our names that has a value
ALIASES: dict[str, tuple[str, ...]] = {
    "devtronAppName": ("app", "project"),
    "eventType": ("event_type",),
    "devtronContainerImageRepo": ("image_repo",),
    "devtronContainerImageTag": ("image_tag",),
    "devtronTriggeredByEmail": ("triggered_by",),
    "devtronPipelineName": ("pipeline",),
    "devtronPipelineType": ("pipeline_type",),
    "devtronEnvName": ("environment",),
    "devtronClusterName": ("cluster",),
    "devtronProjectName": ("project",),
}
KNOWN_VARIABLES: frozenset[str] = frozenset(
    [*COMMON_VARIABLES, *ALIASES, *(name for names in KIND_VARIABLES.values() for name in names)]
)
_FILTERS = [
    "default",
    "d",
    "upper",
    "lower",
    "title",
    "capitalize",
    "trim",
    "replace",
    "truncate",
    "join",
    "length",
    "count",
    "first",
    "last",
    "round",
    "int",
    "float",
    "string",
    "abs",
    "list",
    "sort",
    "unique",
    "reverse",
    "min",
    "max",
    "sum",
    "map",
    "select",
    "reject",
    "selectattr",
    "rejectattr",
    "urlencode",
    "tojson",
]


class TemplateError(ValueError):
    """A template that cannot be used; `code` is machine-readable, the message says what to fix."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _finalize(value: Any) -> Any:
    """How a value prints inside a string: JSON spelling for booleans and null, JSON text for structures."""
    if value is None or isinstance(value, Undefined):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dict | list | tuple):
        return orjson.dumps(value, default=str).decode()
    return value


def _bounded_range(*args: int) -> range:
    r = range(*args)
    if len(r) > MAX_RANGE:
        raise SecurityError(f"range() larger than {MAX_RANGE}")
    return r


class _Sandbox(SandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
            raise SecurityError("exponent too large")
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if (
                    isinstance(seq, str | list | tuple)
                    and isinstance(times, int)
                    and len(seq) * times > MAX_REPEAT_CHARS
                ):
                    raise SecurityError("repetition too large")
        return super().call_binop(context, operator, left, right)


def _environment() -> SandboxedEnvironment:
    env = _Sandbox(autoescape=False, finalize=_finalize, undefined=Undefined, keep_trailing_newline=True)
    env.filters = {name: env.filters[name] for name in _FILTERS}
    env.globals = {"range": _bounded_range}
    return env


_ENV = _environment()
_MARKERS = ("{{", "{%", "{#")


def strip_trailing_commas(source: str) -> str:
    """JSON with the commas before a closing `]` or `}` removed (outside strings)."""
    out: list[str] = []
    in_string = escaped = False
    for char in source:
        if in_string:
            out.append(char)
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
            continue
        if char == '"':
            in_string = True
        elif char in "]}":
            j = len(out) - 1
            while j >= 0 and out[j] in " \t\r\n":
                j -= 1
            if j >= 0 and out[j] == ",":
                del out[j]
        out.append(char)
    return "".join(out)


Node = Any  # a parsed JSON value whose templated strings are replaced by compiled Jinja templates


class PayloadTemplate:
    """A parsed, compiled template; `render` gives the body bytes for one message."""

    def __init__(self, source: str) -> None:
        if len(source) > MAX_TEMPLATE_CHARS:
            raise TemplateError(
                "template_too_large", f"template is longer than {MAX_TEMPLATE_CHARS} characters"
            )
        try:
            parsed = orjson.loads(strip_trailing_commas(source))
        except orjson.JSONDecodeError as exc:
            raise TemplateError("template_not_json", f"template is not JSON: {exc}") from None
        if not isinstance(parsed, dict | list):
            raise TemplateError("template_not_json", "template must be a JSON object or array")
        self.variables: set[str] = set()
        self._root: Node = self._compile(parsed)
        unknown = sorted(self.variables - KNOWN_VARIABLES)
        if unknown:
            raise TemplateError(
                "template_unknown_variable",
                f"unknown template variable(s): {', '.join(unknown)[:300]} (see docs/providers.md for the list)",
            )

    def _compile(self, node: Any) -> Node:
        if isinstance(node, dict):
            return {key: self._compile(value) for key, value in node.items()}
        if isinstance(node, list):
            return [self._compile(value) for value in node]
        if isinstance(node, str) and any(m in node for m in _MARKERS):
            try:
                ast = _ENV.parse(node)
                self.variables |= meta.find_undeclared_variables(ast) - set(_ENV.globals)
                return _ENV.from_string(ast)  # compiling checks filter names too
            except TemplateSyntaxError as exc:
                raise TemplateError("template_syntax", f"template syntax error: {exc.message}") from None
        return node

    def render(self, variables: Mapping[str, Any]) -> bytes:
        try:
            body = orjson.dumps(_render(self._root, variables))
        except (JinjaTemplateError, TypeError, ValueError, ArithmeticError, OverflowError) as exc:
            raise TemplateError(
                "template_render", f"template failed to render: {type(exc).__name__}: {exc}"[:300]
            ) from None
        if len(body) > MAX_RENDERED_BYTES:
            raise TemplateError("template_too_large", f"rendered body is over {MAX_RENDERED_BYTES} bytes")
        return body


def _render(node: Node, variables: Mapping[str, Any]) -> Any:
    if isinstance(node, dict):
        return {key: _render(value, variables) for key, value in node.items()}
    if isinstance(node, list):
        return [_render(value, variables) for value in node]
    render: Callable[..., str] | None = getattr(node, "render", None)
    if render is not None:
        return render(variables)
    return node


@lru_cache(maxsize=256)
def compile_template(source: str) -> PayloadTemplate:
    """Compiled once per distinct template per process (configs are re-read on every delivery batch)."""
    return PayloadTemplate(source)


def template_variables(message: RenderedMessage) -> dict[str, Any]:
    """Every variable a template can use for this message: common, per kind, and the Devtron aliases."""
    data = message.data
    values: dict[str, Any] = {
        "event_id": data.get("event_id"),
        "event_type": message.event_type,
        "kind": message.kind,
        "project": data.get("project"),
        "environment": data.get("environment"),
        "severity": message.severity,
        "created_at": data.get("created_at"),
        "title": message.title,
        "text": message.text,
        "link": message.link,
        "footer": message.footer,
        "lifecycle_key": message.lifecycle_key,
        "fields": [{"name": n, "value": v} for n, v in message.fields],
        "data": data,
    }
    for names in KIND_VARIABLES.values():
        for name in names:
            values.setdefault(name, data.get(name))
    for alias, candidates in ALIASES.items():
        values[alias] = next((values[c] for c in candidates if values.get(c) not in (None, "")), None)
    return values
