"""The `herald` command line: operator verbs over the HTTP API (keys, integrations, deliveries, dead letters,
routes), plus the few that talk to the database directly (db upgrade, keys rotate-encryption).

The API's address and key come from --api-url/--api-key or HERALD_API_URL/HERALD_API_KEY. Lists print as
tables, or as JSON with --json; errors print the API's error code and exit non-zero (see api/cli_client.py).
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer

from api.cli_channels import channels_cli
from api.cli_client import ApiClient, HeraldTyper, Json, call, err, out, print_json, short_time, table, when
from api.cli_dlq import dlq_cli, routes_cli
from api.cli_incidents import incidents_cli
from shared.config import Settings
from shared.crypto import generate_key_spec

cli = HeraldTyper(help="Herald: queue-backed notification delivery.", no_args_is_help=True)
db_cli = HeraldTyper(help="Database schema.", no_args_is_help=True)
keys_cli = HeraldTyper(help="API keys, and re-encrypting stored secrets.", no_args_is_help=True)
integrations_cli = HeraldTyper(help="Integrations (destinations).", no_args_is_help=True)
deliveries_cli = HeraldTyper(help="Deliveries and their attempts.", no_args_is_help=True)
for sub, name in (
    (db_cli, "db"),
    (keys_cli, "keys"),
    (integrations_cli, "integrations"),
    (deliveries_cli, "deliveries"),
    (dlq_cli, "dlq"),
    (routes_cli, "routes"),
    (channels_cli, "channels"),
    (incidents_cli, "incidents"),
):
    cli.add_typer(sub, name=name)
# kept for `herald db upgrade`'s messages
console = err


@cli.callback()
def main_options(
    ctx: typer.Context,
    api_url: Annotated[
        str, typer.Option(envvar="HERALD_API_URL", help="Base URL of the Herald API.")
    ] = "http://127.0.0.1:8000",
    api_key: Annotated[
        str | None,
        typer.Option(envvar="HERALD_API_KEY", help="API key (admin, or read for lists).", show_default=False),
    ] = None,
    timeout_s: Annotated[float, typer.Option(help="HTTP timeout per request, seconds.")] = 30.0,
) -> None:
    ctx.obj = ApiClient(api_url, api_key, timeout_s)


# db, encryption keys


@db_cli.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head", help="Alembic revision to upgrade to.")) -> None:
    """Apply migrations to HERALD_DATABASE_URL."""
    from shared.migrate import upgrade

    try:
        upgrade(Settings().database_url, revision)
    except Exception as exc:
        err.print(f"[red]migration failed:[/red] {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
        raise typer.Exit(1) from None
    err.print("[green]database is at the latest schema[/green]")


@cli.command("gen-encryption-key")
def gen_encryption_key(
    key_id: str = typer.Option("k1", help="Key id stored beside each ciphertext."),
) -> None:
    """Print a new AES-256 key in HERALD_ENCRYPTION_KEYS form (kid:base64)."""
    typer.echo(generate_key_spec(key_id))


@keys_cli.command("rotate-encryption")
def keys_rotate_encryption(
    batch_size: Annotated[int, typer.Option(min=1, max=10_000, help="Rows per transaction.")] = 100,
    as_json: Json = False,
) -> None:
    """Re-encrypt every integration config with the first key of HERALD_ENCRYPTION_KEYS (database direct)."""
    from api.cli_keys import rotate_encryption

    try:
        result = rotate_encryption(Settings(), batch_size)
    except Exception as exc:
        err.print(f"[red]rotation failed:[/red] {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
        raise typer.Exit(1) from None
    data = {
        "primary_key_id": result.primary_kid,
        "rotated": result.rotated,
        "unreadable": [str(i) for i in result.unreadable],
    }
    if as_json:
        print_json(data)
    else:
        out.print(f"re-encrypted {result.rotated} integration config(s) with key {result.primary_kid!r}")
        for row_id in result.unreadable:
            err.print(f"[yellow]unreadable with the configured keys:[/yellow] integration {row_id}")
    if result.unreadable:
        raise typer.Exit(1)


# API keys

_KEYS_LIST_FLAGS = {"include_revoked": "--all"}


@keys_cli.command("create")
def keys_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="What the key is for, e.g. 'ci-ios'.")],
    scope: Annotated[list[str], typer.Option("--scope", "-s", help="admin, ingest or read (repeatable).")],
    project: Annotated[str | None, typer.Option(help="Bind an ingest key to one project.")] = None,
    as_json: Json = False,
) -> None:
    """Create an API key. The key is printed once; only its hash is stored."""
    data = call(
        ctx,
        "POST",
        "/v1/keys",
        body={"name": name, "scopes": scope, "project": project},
        flags={"scopes": "--scope", "project": "--project", "name": "NAME"},
    )
    if as_json:
        print_json(data)
        return
    bound = f", project {data['project']}" if data.get("project") else ""
    out.print(
        f"created API key {data['name']!r} (scopes {', '.join(data['scopes'])}{bound})", highlight=False
    )
    # Plain echo, one value per line: nothing wraps or styles the values a user copies.
    typer.echo(f"id: {data['id']}")
    typer.echo(f"API key (shown once): {data['key']}")
    err.print("[yellow]Store the API key now: only its hash is kept, it cannot be shown again.[/yellow]")


@keys_cli.command("list")
def keys_list(
    ctx: typer.Context,
    include_revoked: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
    as_json: Json = False,
) -> None:
    """List API keys (never the keys themselves)."""
    data = call(
        ctx,
        "GET",
        "/v1/keys",
        params={"include_revoked": str(include_revoked).lower()},
        flags=_KEYS_LIST_FLAGS,
    )
    if as_json:
        print_json(data)
        return
    table(
        "API keys",
        ["id", "name", "prefix", "scopes", "project", "created", "revoked"],
        (
            [
                k["id"],
                k["name"],
                k["prefix"] + "…",
                ",".join(k["scopes"]),
                k["project"],
                short_time(k["created_at"]),
                short_time(k["revoked_at"]),
            ]
            for k in data
        ),
        hide_first=("created", "project", "prefix"),
    )


@keys_cli.command("revoke")
def keys_revoke(ctx: typer.Context, key_id: Annotated[str, typer.Argument(help="The key's id.")]) -> None:
    """Revoke a key (takes effect within seconds on every API process)."""
    call(ctx, "DELETE", f"/v1/keys/{key_id}")
    out.print(f"revoked key {key_id}")


# integrations and deliveries


@integrations_cli.command("list")
def integrations_list(
    ctx: typer.Context,
    provider: Annotated[str | None, typer.Option(help="Only this provider.")] = None,
    project: Annotated[str | None, typer.Option(help="Only integrations bound to this project.")] = None,
    as_json: Json = False,
) -> None:
    """List integrations, configs masked."""
    data = call(ctx, "GET", "/v1/integrations", params={"provider": provider, "project": project})
    if as_json:
        print_json(data)
        return
    # recent_outcomes: what happened to the integration's deliveries lately, beside the failing flag (which
    # only auth and target errors set): an integration whose every delivery died is not "ok".
    windows = {i["recent_outcomes"]["window_s"] for i in data if i.get("recent_outcomes")}
    recent = f"last {_duration(windows.pop())}" if len(windows) == 1 else "recent"
    columns = ["id", "name", "provider", "project", "enabled", "circuit", "status"]
    if any(i.get("recent_outcomes") for i in data):
        columns.append(recent)
    table(
        "Integrations",
        columns,
        (
            [
                i["id"],
                i["name"],
                i["provider"],
                i["project"] or "(all)",
                "yes" if i["enabled"] else "no",
                _circuit(i.get("circuit")),
                f"failing: {i['failing_reason']}" if i["failing"] else "ok",
                _outcomes(i.get("recent_outcomes")),
            ][: len(columns)]
            for i in data
        ),
        hide_first=("project", "enabled", "provider"),
    )


def _circuit(circuit: dict[str, Any] | None) -> str:
    """`closed`, or `open since <time>: <reason> (next probe <time>)`."""
    if not circuit or circuit["state"] == "closed":
        return "closed"
    probe = (
        f", next probe {when(circuit['next_probe_at'], compact=True)}" if circuit.get("next_probe_at") else ""
    )
    return f"{circuit['state']} since {when(circuit['since'], compact=True)}: {circuit.get('reason') or '?'}{probe}"


@integrations_cli.command("show")
def integrations_show(
    ctx: typer.Context,
    integration_id: Annotated[str, typer.Argument(help="The integration's id.")],
    as_json: Json = False,
) -> None:
    """One integration: config masked, its circuit, why it is failing or disabled, recent outcomes."""
    i = call(ctx, "GET", f"/v1/integrations/{integration_id}", flags={"integration_id": "INTEGRATION_ID"})
    if as_json:
        print_json(i)
        return
    circuit = i.get("circuit") or {}
    rows = [
        ("id", i["id"]),
        ("name", i["name"]),
        ("provider", i["provider"]),
        ("project", i["project"] or "(all)"),
        (
            "enabled",
            "yes" if i["enabled"] else f"no ({i['disabled_reason']})" if i.get("disabled_reason") else "no",
        ),
        ("circuit", circuit.get("state", "closed")),
        ("circuit reason", circuit.get("reason") or ""),
        ("circuit since", when(circuit.get("since"))),
        ("next probe", when(circuit.get("next_probe_at"))),
        ("status", f"failing: {i['failing_reason']}" if i["failing"] else "ok"),
        ("recent", _outcomes(i.get("recent_outcomes"))),
        ("config", json.dumps(i["config"], sort_keys=True)),
    ]
    table("Integration", ["field", "value"], ([k, str(v)] for k, v in rows))


def _duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 86400}d" if s % 86400 == 0 else f"{s // 3600}h" if s % 3600 == 0 else f"{s}s"


def _outcomes(recent: dict[str, Any] | None) -> str:
    if not recent:
        return ""
    return f"{recent['delivered']} delivered, {recent['retrying']} retrying, {recent['dead']} dead"


@integrations_cli.command("test")
def integrations_test(
    ctx: typer.Context,
    integration_id: Annotated[str, typer.Argument(help="The integration's id.")],
    wait: Annotated[bool, typer.Option(help="Wait for the outcome; exit 1 if it failed.")] = True,
    timeout_s: Annotated[float, typer.Option(help="How long to wait, seconds.")] = 30.0,
    as_json: Json = False,
) -> None:
    """Send a [TEST] event to one integration through the real pipeline."""
    sent = call(ctx, "POST", f"/v1/integrations/{integration_id}/test")
    if not wait:
        if as_json:
            print_json(sent)
        else:
            out.print(f"test delivery {sent['delivery_id']} queued")
        return
    deadline = time.monotonic() + timeout_s
    delivery = call(ctx, "GET", f"/v1/deliveries/{sent['delivery_id']}")
    while delivery["state"] not in ("delivered", "dead") and time.monotonic() < deadline:
        time.sleep(0.2)
        delivery = call(ctx, "GET", f"/v1/deliveries/{sent['delivery_id']}")
    if as_json:
        print_json(delivery)
    else:
        _print_delivery(delivery)
    if delivery["state"] != "delivered":
        err.print(f"[red]test delivery is {delivery['state']}[/red]: {delivery['last_error_detail'] or ''}")
        raise typer.Exit(1)


def _budget(redrives_ago: int) -> str:
    # Attempts made before a redrive keep their rows; the redrive gave the delivery a fresh budget.
    if not redrives_ago:
        return "current"
    return "previous" if redrives_ago == 1 else f"{redrives_ago} redrives ago"


def _cause(d: dict[str, Any]) -> str:
    """The error class and its cause: "provider_unavailable: connection failed: Name or service not known"."""
    parts = [p for p in (d.get("last_error_class"), d.get("last_error_detail")) if p]
    return ": ".join(parts)


def _print_delivery(d: dict[str, Any]) -> None:
    out.print(
        f"delivery {d['id']}  [bold]{d['state']}[/bold]  {d['event_type']} {d['project']}  "
        f"attempts={d['attempt_count']}" + (f"  reason={d['dead_reason']}" if d["dead_reason"] else ""),
        soft_wrap=True,
        highlight=False,
    )
    if _cause(d):
        out.print(f"cause: {_cause(d)}", soft_wrap=True, highlight=False)
    if d.get("next_attempt_at"):
        out.print(f"next attempt: {when(d['next_attempt_at'])}", soft_wrap=True, highlight=False)
    table(
        "Attempts",
        ["#", "budget", "started", "ms", "outcome", "status", "error", "response"],
        (
            [
                a["attempt_no"],
                _budget(a["redrives_ago"]),
                short_time(a["started_at"]),
                f"{a['duration_ms']:.0f}",
                a["outcome"],
                a["status_code"],
                a["error_class"],
                (a["response_excerpt"] or "")[:80],
            ]
            for a in d["attempts"]
        ),
        ids=(),
    )


@deliveries_cli.command("show")
def deliveries_show(
    ctx: typer.Context,
    delivery_id: Annotated[str, typer.Argument(help="The delivery's id.")],
    as_json: Json = False,
) -> None:
    """One delivery with every attempt (status code, error class, duration, redacted response)."""
    data = call(ctx, "GET", f"/v1/deliveries/{delivery_id}")
    if as_json:
        print_json(data)
    else:
        _print_delivery(data)


@deliveries_cli.command("list")
def deliveries_list(
    ctx: typer.Context,
    integration_id: Annotated[str, typer.Argument(help="The integration's id.")],
    state: Annotated[str | None, typer.Option(help="Only this state.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 20,
    as_json: Json = False,
) -> None:
    """An integration's recent deliveries, newest first."""
    data = call(
        ctx,
        "GET",
        f"/v1/integrations/{integration_id}/deliveries",
        params={"state": state, "limit": limit},
        flags={"integration_id": "INTEGRATION_ID", "state": "--state", "limit": "--limit"},
    )
    if as_json:
        print_json(data)
        return
    items = data["items"]
    columns = ["id", "created", "event", "state", "attempts", "cause"]
    if any(d.get("next_attempt_at") for d in items):
        columns.append("next attempt")
    table(
        "Deliveries",
        columns,
        (
            [
                d["id"],
                short_time(d["created_at"]),
                f"{d['event_type']} {d['project']}",
                d["state"],
                d["attempt_count"],
                _cause(d),
                when(d.get("next_attempt_at"), compact=True),
            ][: len(columns)]
            for d in items
        ),
        hide_first=("created", "attempts", "event"),
    )


def main() -> None:
    cli()
