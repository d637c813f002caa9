"""The `herald` command line: operator verbs over the HTTP API (keys, integrations, deliveries, dead letters,
routes), plus the few that talk to the database directly (db upgrade, keys rotate-encryption).

The API's address and key come from --api-url/--api-key or HERALD_API_URL/HERALD_API_KEY. Lists print as
tables, or as JSON with --json; errors print the API's error code and exit non-zero (see api/cli_client.py).
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from api.cli_channels import channels_cli
from api.cli_client import ApiClient, Json, call, err, out, print_json, short_time, table
from api.cli_dlq import dlq_cli, routes_cli
from api.cli_incidents import incidents_cli
from shared.config import Settings
from shared.crypto import generate_key_spec

cli = typer.Typer(help="Herald: queue-backed notification delivery.", no_args_is_help=True)
db_cli = typer.Typer(help="Database schema.", no_args_is_help=True)
keys_cli = typer.Typer(help="API keys, and re-encrypting stored secrets.", no_args_is_help=True)
integrations_cli = typer.Typer(help="Integrations (destinations).", no_args_is_help=True)
deliveries_cli = typer.Typer(help="Deliveries and their attempts.", no_args_is_help=True)
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


@keys_cli.command("create")
def keys_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="What the key is for, e.g. 'ci-ios'.")],
    scope: Annotated[list[str], typer.Option("--scope", "-s", help="admin, ingest or read (repeatable).")],
    project: Annotated[str | None, typer.Option(help="Bind an ingest key to one project.")] = None,
    as_json: Json = False,
) -> None:
    """Create an API key. The key is printed once; only its hash is stored."""
    data = call(ctx, "POST", "/v1/keys", body={"name": name, "scopes": scope, "project": project})
    if as_json:
        print_json(data)
        return
    out.print(f"created key {data['id']} ({', '.join(data['scopes'])}); store it now, it is not shown again:")
    typer.echo(data["key"])


@keys_cli.command("list")
def keys_list(
    ctx: typer.Context,
    include_revoked: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
    as_json: Json = False,
) -> None:
    """List API keys (never the keys themselves)."""
    data = call(ctx, "GET", "/v1/keys", params={"include_revoked": str(include_revoked).lower()})
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
    table(
        "Integrations",
        ["id", "name", "provider", "project", "enabled", "status"],
        (
            [
                i["id"],
                i["name"],
                i["provider"],
                i["project"] or "(all)",
                "yes" if i["enabled"] else "no",
                f"failing: {i['failing_reason']}" if i["failing"] else "ok",
            ]
            for i in data
        ),
    )


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


def _print_delivery(d: dict[str, Any]) -> None:
    out.print(
        f"delivery {d['id']}  [bold]{d['state']}[/bold]  {d['event_type']} {d['project']}  "
        f"attempts={d['attempt_count']}" + (f"  reason={d['dead_reason']}" if d["dead_reason"] else "")
    )
    table(
        "Attempts",
        ["#", "budget", "started", "ms", "outcome", "status", "error", "response"],
        (
            [
                a["attempt_no"],
                "current" if not a["redrives_ago"] else f"-{a['redrives_ago']}",
                short_time(a["started_at"]),
                f"{a['duration_ms']:.0f}",
                a["outcome"],
                a["status_code"],
                a["error_class"],
                (a["response_excerpt"] or "")[:80],
            ]
            for a in d["attempts"]
        ),
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
        ctx, "GET", f"/v1/integrations/{integration_id}/deliveries", params={"state": state, "limit": limit}
    )
    if as_json:
        print_json(data)
        return
    table(
        "Deliveries",
        ["id", "created", "event", "project", "state", "attempts", "last error"],
        (
            [
                d["id"],
                short_time(d["created_at"]),
                d["event_type"],
                d["project"],
                d["state"],
                d["attempt_count"],
                d["last_error_class"],
            ]
            for d in data["items"]
        ),
    )


def main() -> None:
    cli()
