"""`herald incidents list|show`: gateway incidents (PushGo Events), their current state and every dispatch
with its deliveries (see api/cli.py for the shared options)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from api.cli_client import Json, call, out, print_json, short_time, table

incidents_cli = typer.Typer(help="Incidents from the gateway (PushGo Events).", no_args_is_help=True)


@incidents_cli.command("list")
def incidents_list(
    ctx: typer.Context,
    channel: Annotated[str | None, typer.Option(help="Only this channel's incidents.")] = None,
    project: Annotated[str | None, typer.Option(help="Only this project's incidents.")] = None,
    state: Annotated[str | None, typer.Option(help="open or closed.")] = None,
    severity: Annotated[str | None, typer.Option(help="critical, high, normal or low.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200, help="At most this many.")] = 50,
    cursor: Annotated[str | None, typer.Option(help="The next_cursor of a previous page.")] = None,
    as_json: Json = False,
) -> None:
    """Incidents, newest first."""
    if state not in (None, "open", "closed"):
        raise typer.BadParameter("--state is open or closed")
    params: dict[str, Any] = {
        "channel": channel,
        "project": project,
        "severity": severity,
        "limit": limit,
        "cursor": cursor,
        "open": None if state is None else str(state == "open").lower(),
    }
    data = call(ctx, "GET", "/v1/incidents", params=params)
    if as_json:
        print_json(data)
        return
    table(
        "Incidents",
        ["event id", "title", "status", "severity", "state", "updates", "started", "ended"],
        (
            [
                i["id"],
                i["title"],
                i["status"],
                i["severity"],
                i["state"],
                i["dispatch_count"],
                short_time(i["started_at"]),
                short_time(i["ended_at"]),
            ]
            for i in data["items"]
        ),
    )
    if data.get("next_cursor"):
        out.print(f"more: --cursor {data['next_cursor']}")


@incidents_cli.command("show")
def incidents_show(
    ctx: typer.Context,
    event_id: Annotated[str, typer.Argument(help="The incident's event_id.")],
    as_json: Json = False,
) -> None:
    """One incident: its current state, then every dispatch in order with its deliveries."""
    data = call(ctx, "GET", f"/v1/incidents/{event_id}")
    if as_json:
        print_json(data)
        return
    out.print(
        f"[bold]{data['title']}[/bold]  ({data['state']}, severity {data['severity']})", highlight=False
    )
    out.print(f"status: {data['status']} - {data['message']}", highlight=False)
    out.print(f"channel {data['channel_id']}, project {data['project']}", highlight=False)
    out.print(f"started {short_time(data['started_at'])}, ended {short_time(data['ended_at']) or '-'}")
    if data["attrs"]:
        out.print("attrs: " + ", ".join(f"{k}={v}" for k, v in data["attrs"].items()), highlight=False)
    table(
        "Dispatches",
        ["#", "route", "op id", "event time", "status", "deliveries"],
        (
            [
                d["sequence"],
                d["route"],
                d["op_id"],
                short_time(d["event_time"]),
                d["fields"].get("status"),
                ", ".join(f"{x['state']}" for x in d["deliveries"]) or "-",
            ]
            for d in data["dispatches"]
        ),
    )
