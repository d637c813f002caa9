"""`herald channels create|list|rotate|delete`: the gateway's PushGo-compatible credentials (see api/cli.py for
the shared options). A generated password is printed once; only its scrypt hash is stored."""

from __future__ import annotations

from typing import Annotated

import typer

from api.cli_client import Json, call, out, print_json, short_time, table

channels_cli = typer.Typer(help="Gateway channels (PushGo channel id + password).", no_args_is_help=True)


@channels_cli.command("create")
def channels_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="What the channel is for, e.g. 'ci-deploys'.")],
    project: Annotated[str, typer.Option(help="The project its events belong to.")],
    channel_id: Annotated[
        str | None,
        typer.Option("--channel-id", help="Keep an existing PushGo channel id (1-64 of A-Z a-z 0-9 _ : -)."),
    ] = None,
    password_stdin: Annotated[
        bool,
        typer.Option(
            "--password-stdin", help="Read the password (8-128 chars) from stdin instead of generating one."
        ),
    ] = False,
    as_json: Json = False,
) -> None:
    """Create a channel. A generated password is printed once: store it now."""
    body: dict[str, str] = {"name": name, "project": project}
    if channel_id is not None:
        body["channel_id"] = channel_id
    if password_stdin:
        body["password"] = typer.get_text_stream("stdin").readline().rstrip("\n")
    data = call(ctx, "POST", "/v1/channels", body=body)
    if as_json:
        print_json(data)
        return
    out.print(f"created channel {data['channel_id']} for project {data['project']}")
    if data.get("password"):
        out.print("password (shown once, store it now):")
        typer.echo(data["password"])


@channels_cli.command("list")
def channels_list(
    ctx: typer.Context,
    project: Annotated[str | None, typer.Option(help="Only this project's channels.")] = None,
    as_json: Json = False,
) -> None:
    """List channels (never their passwords)."""
    data = call(ctx, "GET", "/v1/channels", params={"project": project})
    if as_json:
        print_json(data)
        return
    table(
        "Channels",
        ["channel id", "name", "project", "version", "created", "updated"],
        (
            [
                c["channel_id"],
                c["name"],
                c["project"],
                c["version"],
                short_time(c["created_at"]),
                short_time(c["updated_at"]),
            ]
            for c in data
        ),
    )


@channels_cli.command("rotate")
def channels_rotate(
    ctx: typer.Context,
    channel_id: Annotated[str, typer.Argument(help="The channel id.")],
    password_stdin: Annotated[
        bool,
        typer.Option("--password-stdin", help="Read the new password from stdin instead of generating one."),
    ] = False,
    as_json: Json = False,
) -> None:
    """Give a channel a new password; the old one stops working within seconds on every API process."""
    body = {"password": typer.get_text_stream("stdin").readline().rstrip("\n")} if password_stdin else None
    data = call(ctx, "POST", f"/v1/channels/{channel_id}/rotate-password", body=body)
    if as_json:
        print_json(data)
        return
    out.print(f"rotated the password of channel {data['channel_id']} (version {data['version']})")
    if data.get("password"):
        out.print("new password (shown once, store it now):")
        typer.echo(data["password"])


@channels_cli.command("delete")
def channels_delete(
    ctx: typer.Context,
    channel_id: Annotated[str, typer.Argument(help="The channel id.")],
) -> None:
    """Delete a channel: its calls are refused; its incidents and things stay readable."""
    call(ctx, "DELETE", f"/v1/channels/{channel_id}")
    out.print(f"deleted channel {channel_id}")
