"""`herald dlq list|redrive|purge` and `herald routes explain FILE` (see api/cli.py for the shared options)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from api.cli_client import HeraldTyper, Json, call, err, out, print_json, short_time, table, when

dlq_cli = HeraldTyper(
    help="The dead-letter set: deliveries that are dead (and, with --state skipped, those skipped).",
    no_args_is_help=True,
)
routes_cli = HeraldTyper(help="Routes.", no_args_is_help=True)


# dead letters

# The API's field names -> the flags of `dlq list|redrive|purge`, so that an error names what the user typed.
DLQ_FLAGS = {
    "ids": "--id",
    "integration_id": "--integration",
    "provider": "--provider",
    "project": "--project",
    "reason": "--reason",
    "since": "--since",
    "until": "--until",
    "states": "--state",
    "state": "--state",
    "limit": "--limit",
    "all": "--all",
}


def _selection(
    ids: list[str] | None,
    integration: str | None,
    provider: str | None,
    project: str | None,
    reason: str | None,
    since: str | None,
    until: str | None,
    state: list[str] | None,
    everything: bool,
) -> dict[str, Any]:
    body: dict[str, Any] = {"ids": ids or [], "states": state or ["dead"], "all": everything}
    for key, value in (
        ("integration_id", integration),
        ("provider", provider),
        ("project", project),
        ("reason", reason),
        ("since", since),
        ("until", until),
    ):
        if value is not None:
            body[key] = value
    return body


Ids = Annotated[list[str] | None, typer.Option("--id", metavar="ID", help="A delivery id (repeatable).")]
Integration = Annotated[str | None, typer.Option("--integration", help="Integration id.")]
Provider = Annotated[str | None, typer.Option(help="The integrations' provider, e.g. slack, webhook.")]
Project = Annotated[str | None, typer.Option(help="Event project.")]
Reason = Annotated[str | None, typer.Option(help="Dead reason, e.g. auth_failed, attempts_exhausted.")]
Since = Annotated[str | None, typer.Option(help="Dead at or after (ISO 8601 with zone).")]
Until = Annotated[str | None, typer.Option(help="Dead before (ISO 8601 with zone).")]
State = Annotated[
    list[str] | None,
    typer.Option(
        "--state",
        metavar="STATE",
        help="dead (default) and/or skipped (repeatable). Skipped: the event came while its integration was "
        "disabled; no call was made.",
    ),
]


@dlq_cli.command("list")
def dlq_list(
    ctx: typer.Context,
    integration: Integration = None,
    provider: Provider = None,
    project: Project = None,
    reason: Reason = None,
    since: Since = None,
    until: Until = None,
    state: State = None,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 50,
    as_json: Json = False,
) -> None:
    """Dead letters, newest first, with counts by reason."""
    params = {
        "integration_id": integration,
        "provider": provider,
        "project": project,
        "reason": reason,
        "since": since,
        "until": until,
        "state": state,
        "limit": limit,
    }
    data = call(ctx, "GET", "/v1/dead-letters", params=params, flags=DLQ_FLAGS)
    if as_json:
        print_json(data)
        return
    items = data["items"]
    if not items and not data["counts_by_reason"]:
        out.print("[dim]no dead letters[/dim]")
        return
    table("Dead letters by reason", ["reason", "count"], sorted(data["counts_by_reason"].items()))
    columns = ["id", "dead since", "integration", "event", "reason", "attempts", "cause"]
    # Only a skipped row can have a next attempt (a dead letter has none until it is redriven).
    if any(d.get("next_attempt_at") for d in items):
        columns.append("next attempt")
    table(
        "Dead letters",
        columns,
        (
            [
                d["id"],
                short_time(d["updated_at"]),
                d["integration_name"],
                f"{d['event_type']} {d['project']}",
                d["reason"],
                d["attempt_count"],
                d.get("last_error_detail") or d.get("last_error_class") or "",
                when(d.get("next_attempt_at"), compact=True),
            ][: len(columns)]
            for d in items
        ),
        hide_first=("dead since", "attempts", "event", "integration"),
    )
    if data["next_cursor"]:
        out.print(
            f"[dim]showing {len(items)} of {data['total']}; narrow the filters or use --json with the API's cursor[/dim]"
        )


def _bulk(ctx: typer.Context, action: str, body: dict[str, Any], as_json: bool) -> None:
    result = call(ctx, "POST", f"/v1/dead-letters/{action}", body=body, flags=DLQ_FLAGS)
    if result["job_id"] is not None:
        # A large set runs in the background: follow its progress.
        with Progress(
            TextColumn(f"{action}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=as_json,
        ) as progress:
            task = progress.add_task(action, total=max(result["matched"], 1))
            while True:
                job = call(ctx, "GET", f"/v1/dead-letters/jobs/{result['job_id']}")
                progress.update(task, completed=job["processed"])
                if job["state"] in ("done", "failed"):
                    break
                time.sleep(0.5)
        result = {**result, "processed": job["processed"], "state": job["state"]}
        if job["state"] == "failed":
            err.print(f"[red]{action} job failed[/red] after {job['processed']} rows: {job['error']}")
            raise typer.Exit(1)
    if as_json:
        print_json(result)
    else:
        verb = "re-queued" if action == "redrive" else "purged"
        out.print(f"{verb} {result['processed']} of {result['matched']} matching dead letter(s)")


@dlq_cli.command("redrive")
def dlq_redrive(
    ctx: typer.Context,
    ids: Ids = None,
    integration: Integration = None,
    provider: Provider = None,
    project: Project = None,
    reason: Reason = None,
    since: Since = None,
    until: Until = None,
    state: State = None,
    everything: Annotated[bool, typer.Option("--all", help="Every dead letter (no filter).")] = False,
    as_json: Json = False,
) -> None:
    """Re-queue dead letters with a fresh attempt budget (idempotent). Large sets show a progress bar.

    Replaying skipped deliveries (events that came while their integration was disabled):

    enable the integration, then: herald dlq redrive --state skipped --integration ID

    (the API's "states": ["skipped"]). Deliveries of an integration still disabled are left alone."""
    _bulk(
        ctx,
        "redrive",
        _selection(ids, integration, provider, project, reason, since, until, state, everything),
        as_json,
    )


@dlq_cli.command("purge")
def dlq_purge(
    ctx: typer.Context,
    ids: Ids = None,
    integration: Integration = None,
    provider: Provider = None,
    project: Project = None,
    reason: Reason = None,
    since: Since = None,
    until: Until = None,
    state: State = None,
    everything: Annotated[bool, typer.Option("--all", help="Every dead letter (no filter).")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: Json = False,
) -> None:
    """Delete dead letters and their attempts for good."""
    if not yes and not typer.confirm("Delete the selected dead letters for good?"):
        raise typer.Exit(1)
    _bulk(
        ctx,
        "purge",
        _selection(ids, integration, provider, project, reason, since, until, state, everything),
        as_json,
    )


# routes


@routes_cli.command("explain")
def routes_explain(
    ctx: typer.Context,
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="A sample event (JSON).")
    ],
    kind: Annotated[
        str | None, typer.Option(help="release or pipeline (default: guessed from the event).")
    ] = None,
    as_json: Json = False,
) -> None:
    """Dry run: which routes the sample event matches (or why not) and what each provider would receive.

    FILE holds the event as posted to /v1/events/{kind}, or {"kind": ..., "event": {...}}."""
    try:
        sample = json.loads(file.read_text())
    except ValueError as exc:
        err.print(f"[red]error:[/red] {file} is not JSON: {exc}")
        raise typer.Exit(2) from None
    if not isinstance(sample, dict):
        err.print(f"[red]error:[/red] {file} must hold a JSON object")
        raise typer.Exit(2)
    if set(sample) != {"kind", "event"}:
        guessed = "release" if str(sample.get("type", "")).startswith("release.") else "pipeline"
        sample = {"kind": kind or guessed, "event": sample}
    data = call(ctx, "POST", "/v1/routes/explain", body=sample)
    if as_json:
        print_json(data)
        return
    out.print(f"{data['event_type']} for {data['project']} (severity {data['severity']})")
    table(
        "Routes",
        ["route", "integration", "provider", "matched", "delivery", "reason"],
        (
            [
                r["route_id"],
                r["integration_name"],
                r["provider"],
                "yes" if r["matched"] else "no",
                r["would_deliver"] or "",
                r["reason"] or "",
            ]
            for r in data["routes"]
        ),
        ids=("route",),
        hide_first=("provider",),
    )
    for r in data["routes"]:
        if r["preview"] is not None:
            out.print(f"[bold]{r['integration_name']}[/bold] ({r['provider']}) would receive:")
            out.print_json(data=r["preview"])
