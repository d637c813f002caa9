"""The `herald` CLI's side of the API: a small HTTP client (stdlib only, so the CLI needs nothing the server
does not) and the output helpers shared by the commands: Rich tables for people, `--json` for scripts.

Exit codes: 0 success; 1 the API refused (its `error_code` and message are printed); 2 bad usage (Typer);
3 the API could not be reached or answered something that is not Herald's JSON.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Sequence
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

out = Console()
err = Console(stderr=True)

EXIT_API_ERROR = 1
EXIT_UNREACHABLE = 3


class CliError(Exception):
    def __init__(self, message: str, exit_code: int = EXIT_API_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


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
            raise CliError(f"{envelope.get('error_code')}: {envelope.get('error')} (HTTP {status})")
        return envelope.get("data")


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    t = Table(title=title, show_lines=False)
    for column in columns:
        t.add_column(column, overflow="fold")
    count = 0
    for row in rows:
        t.add_row(*("" if v is None else str(v) for v in row))
        count += 1
    if count:
        out.print(t)
    else:
        out.print(f"[dim]no {title.lower()}[/dim]")


def short_time(value: str | None) -> str:
    return (value or "")[:19].replace("T", " ")


Json = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts) instead of a table.")]


def call(ctx: typer.Context, method: str, path: str, **kwargs: Any) -> Any:
    """One API call with the client the `herald` callback built; errors end the command with a message."""
    client: ApiClient = ctx.obj
    try:
        return client.request(method, path, **kwargs)
    except CliError as exc:
        err.print(f"[red]error:[/red] {exc.message}", highlight=False)
        raise typer.Exit(exc.exit_code) from None
