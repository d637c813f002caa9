"""The `herald` CLI's side of the API: a small HTTP client (stdlib only, so the CLI needs nothing the server
does not) and the output helpers shared by the commands: Rich tables for people, `--json` for scripts.

Exit codes: 0 success; 1 the API refused (its `error_code` and message are printed); 2 bad usage (Typer);
3 the API could not be reached or answered something that is not Herald's JSON.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from typer.core import TyperCommand, TyperGroup, TyperOption

from api.cli_table import render_table

out = Console()
err = Console(stderr=True)

EXIT_API_ERROR = 1
EXIT_UNREACHABLE = 3


class CliError(Exception):
    def __init__(self, message: str, exit_code: int = EXIT_API_ERROR, error_code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.error_code = error_code


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class ApiClient:
    def __init__(self, base_url: str, api_key: str | None, timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout_s = timeout_s
        self._opener = urllib.request.build_opener(_NoRedirects)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
    ) -> Any:
        """The envelope's `data`; raises CliError with the API's error code and message otherwise."""
        if not self.api_key:
            raise CliError("no API key: pass --api-key or set HERALD_API_KEY", EXIT_UNREACHABLE)
        query = urllib.parse.urlencode(
            [(k, v) for k, vs in (params or {}).items() for v in _as_list(vs) if v is not None], doseq=True
        )
        url = f"{self.base_url}{path}" + (f"?{query}" if query else "")
        headers = {"Authorization": f"Bearer {self.api_key}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310 (http(s) base URL from the operator)
        try:
            with self._opener.open(request, timeout=self.timeout_s) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CliError(
                f"cannot reach the Herald API at {self.base_url}: {reason}", EXIT_UNREACHABLE
            ) from None
        if status == 204:
            return None
        try:
            envelope = json.loads(raw)
        except ValueError:
            raise CliError(f"the API answered HTTP {status} without JSON", EXIT_UNREACHABLE) from None
        if not isinstance(envelope, dict) or "success" not in envelope:
            raise CliError(f"the API answered HTTP {status} with an unexpected body", EXIT_UNREACHABLE)
        if not envelope["success"]:
            code = envelope.get("error_code")
            raise CliError(f"{code}: {envelope.get('error')} (HTTP {status})", error_code=code)
        return envelope.get("data")


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def table(
    title: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    ids: Iterable[str] = ("id",),
    hide_first: Sequence[str] = (),
) -> int:
    """A table on stdout that fits the terminal and never breaks an id (api/cli_table.py); returns its row count."""
    return render_table(out, title, columns, rows, ids=ids, hide_first=hide_first)


def short_time(value: str | None) -> str:
    return (value or "")[:19].replace("T", " ")


def when(value: str | None, now: datetime | None = None, *, compact: bool = False) -> str:
    """An API timestamp in UTC and how far away it is: "2026-12-01 21:40:05 (in 8 s)"; `compact` drops the date
    within a day of now (tables): "21:40:05 (in 8 s)"."""
    if not value:
        return ""
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return short_time(value)
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    delta_s = round((at - (now or datetime.now(UTC))).total_seconds())
    ago = abs(delta_s)
    amount = f"{ago} s" if ago < 120 else f"{ago // 60} min" if ago < 7200 else f"{ago // 3600} h"
    relative = "now" if delta_s == 0 else f"in {amount}" if delta_s > 0 else f"{amount} ago"
    shown = (
        f"{at.astimezone(UTC):%H:%M:%S}"
        if compact and ago < 86400
        else f"{at.astimezone(UTC):%Y-%m-%d %H:%M:%S}"
    )
    return f"{shown} ({relative})"


Json = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts) instead of a table.")]


def name_flags(message: str, flags: Mapping[str, str], error_code: str | None = None) -> str:
    """The API's message with its field names replaced by the command's flags ("integration_id" -> "--integration").

    Field names that are also English words ("project", "all") are replaced only where the API uses them as a
    field: a validation error's location ("query.since: ..."), "all=true", or the list of filters of an
    empty_selection error."""
    for field, flag in flags.items():
        name = re.escape(field)
        message = re.sub(rf"(^|: )(?:(?:query|body|path)\.)?{name}(?:\.\d+)?(?=:)", rf"\g<1>{flag}", message)
        message = re.sub(rf"(?<![\w.-]){name}=true\b", flag, message)
        if "_" in field or error_code == "empty_selection":
            message = re.sub(rf"(?<![\w.-]){name}(?![\w-])", flag, message)
    return message


def call(
    ctx: typer.Context, method: str, path: str, *, flags: Mapping[str, str] | None = None, **kwargs: Any
) -> Any:
    """One API call with the client the `herald` callback built; errors end the command with a message.

    `flags` maps the API's field names to this command's options, so that an error names what the user typed."""
    client: ApiClient = ctx.obj
    try:
        return client.request(method, path, **kwargs)
    except CliError as exc:
        message = name_flags(exc.message, flags or {}, exc.error_code)
        err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None


# Help without "<bool>" after every flag


def _untyped_flags(params: list[Any]) -> list[Any]:
    # Typer prints a type after every option, "<bool>" too, which reads as if `--all` took a value.
    for p in params:
        if isinstance(p, TyperOption) and p.is_flag and p.metavar is None:
            p.metavar = ""
    return params


class HeraldCommand(TyperCommand):
    # Typer vendors its own click (typer._click, private): the signature is typed loosely on purpose.
    def get_params(self, ctx: Any) -> list[Any]:
        return _untyped_flags(super().get_params(ctx))


class HeraldGroup(TyperGroup):
    # Typer vendors its own click (typer._click, private): the signature is typed loosely on purpose.
    def get_params(self, ctx: Any) -> list[Any]:
        return _untyped_flags(super().get_params(ctx))


class HeraldTyper(typer.Typer):
    """typer.Typer whose groups and commands print flags without a type in --help."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("cls", HeraldGroup)
        super().__init__(**kwargs)

    def command(self, *args: Any, **kwargs: Any) -> Callable[[Any], Any]:
        kwargs.setdefault("cls", HeraldCommand)
        return super().command(*args, **kwargs)
