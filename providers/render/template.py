"""User payload templates for the generic webhook: JSON with `{{variable}}` placeholders, rendered safely.

How a template can never produce invalid JSON: it is parsed as JSON first (a trailing comma before `]` or `}` is
forgiven, as seed 003's RingCentral sample has one), and only the string values are Jinja templates. Each renders
to a Python string that the JSON serialiser escapes, so a value holding quotes, backslashes or newlines stays
inside its string. Jinja runs in a bounded sandbox (providers/render/sandbox.py: no attribute tricks, no imports,
an allow-list of filters, and every operation sized and counted against `RenderLimits` while it renders), so a
template cannot exhaust the worker either: a broken limit is the `template_limit` error. A template is also
rendered once against sample values when it is saved (`check_template`), so what breaks a limit whatever the
event is refused then. `render_off_loop` runs a render in a small thread pool, never on an event loop.

Variables are the same for every event (`COMMON_VARIABLES`) plus per kind (`KIND_VARIABLES`); seed 003's Devtron
names (`devtronAppName`, `eventType`, ...) are aliases (`ALIASES`). docs/providers.md lists them all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Any, TypeVar

import orjson
from jinja2 import Template, TemplateSyntaxError, meta
from jinja2.exceptions import TemplateError as JinjaTemplateError
from jinja2.runtime import Undefined

from providers.render.budget import Budget, RenderLimits, TemplateLimitExceeded, metered
from providers.render.sandbox import BoundedSandbox, RefusedConstruct, check_tree
from shared.config import get_settings
from shared.rendering import RenderedMessage

__all__ = ["PayloadTemplate", "RenderLimits", "TemplateError", "check_template", "compile_template"]

MAX_TEMPLATE_CHARS = 32 * 1024
#: renders run at most this many at once per process, on threads of their own (never on an event loop)
RENDER_THREADS = 2

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


def _environment() -> BoundedSandbox:
    return BoundedSandbox(finalize=_finalize, filter_names=_FILTERS)


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
                return _ENV.from_string(check_tree(ast, _ENV))  # compiling checks filter names too
            except TemplateSyntaxError as exc:
                raise TemplateError("template_syntax", f"template syntax error: {exc.message}") from None
            except RefusedConstruct as exc:
                raise TemplateError("template_syntax", f"template syntax error: {exc}") from None
            except RecursionError:
                raise TemplateError("template_syntax", "template syntax error: nested too deeply") from None
        return node

    def render(self, variables: Mapping[str, Any], *, limits: RenderLimits | None = None) -> bytes:
        """The body for these variables; TemplateError `template_limit` as soon as a limit is broken."""
        limits = limits or settings_limits()
        try:
            with metered(limits) as spent:
                body = orjson.dumps(_render(self._root, variables, spent))
        except TemplateLimitExceeded as exc:
            raise TemplateError("template_limit", f"template limit: {exc}") from None
        except (JinjaTemplateError, TypeError, ValueError, ArithmeticError, RecursionError) as exc:
            raise TemplateError(
                "template_render", f"template failed to render: {type(exc).__name__}: {exc}"[:300]
            ) from None
        if len(body) > limits.max_output_bytes:  # the stream counted characters; escaping adds bytes
            raise TemplateError(
                "template_limit", f"template limit: rendered body is over {limits.max_output_bytes} bytes"
            )
        return body


def _render(node: Node, variables: Mapping[str, Any], spent: Budget) -> Any:
    if isinstance(node, dict):
        return {key: _render(value, variables, spent) for key, value in node.items()}
    if isinstance(node, list):
        return [_render(value, variables, spent) for value in node]
    if not isinstance(node, Template):
        return node
    # Streamed, so a template that prints a lot stops at the limit instead of after building it all.
    chunks: list[str] = []
    for chunk in node.generate(variables):
        spent.emit(len(chunk))
        chunks.append(chunk)
    return "".join(chunks)


def settings_limits() -> RenderLimits:
    """The limits configured for this process (HERALD_TEMPLATE_MAX_OUTPUT_BYTES, ..._MAX_RENDER_STEPS)."""
    settings = get_settings()
    return _limits(settings.template_max_output_bytes, settings.template_max_render_steps)


@lru_cache(maxsize=8)
def _limits(max_output_bytes: int, max_render_steps: int) -> RenderLimits:
    return RenderLimits(max_output_bytes=max_output_bytes, max_render_steps=max_render_steps)


_RENDER_POOL = ThreadPoolExecutor(max_workers=RENDER_THREADS, thread_name_prefix="herald-template")
_T = TypeVar("_T")


async def render_off_loop(render: Callable[..., _T], *args: Any) -> _T:
    """`render(*args)` on the template threads: a render that uses its whole budget (a good fraction of a
    second) must not stall every other send sharing the caller's event loop. A pool of its own rather than
    the loop's default executor, which the HTTP client's DNS lookups use."""
    return await asyncio.get_running_loop().run_in_executor(_RENDER_POOL, render, *args)


@lru_cache(maxsize=256)
def compile_template(source: str) -> PayloadTemplate:
    """Compiled once per distinct template per process (configs are re-read on every delivery batch)."""
    return PayloadTemplate(source)


@lru_cache(maxsize=256)
def check_template(source: str) -> PayloadTemplate:
    """Compiled and rendered once against sample values: what a template is checked with when it is saved, so
    one that breaks a limit whatever the event (`'%50000000s' % 1`, nested loops) is refused then (422)."""
    template = compile_template(source)
    try:
        template.render(sample_variables())
    except TemplateError as exc:
        # Only a limit: a render error on made-up values (a pipeline field on the release sample) may well
        # not happen on real events, and shows at send time as `template_render`.
        if exc.code == "template_limit":
            raise
    return template


@lru_cache(maxsize=1)
def sample_variables() -> dict[str, Any]:
    """Every variable with a short, typical value (the sample a saved template must render within limits)."""
    values: dict[str, Any] = {name: f"sample {name}" for name in KNOWN_VARIABLES}
    values.update(
        {
            "kind": "release",
            "event_type": "release.created",
            "severity": "info",
            "mandatory": False,
            "rollout_percent": 50,
            "previous_rollout_percent": 10,
            "fields": [{"name": f"Field {n}", "value": f"value {n}"} for n in range(1, 4)],
        }
    )
    values["data"] = {name: value for name, value in values.items() if name in KIND_VARIABLES["release"]}
    return values


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
