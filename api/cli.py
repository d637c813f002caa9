"""The `herald` command line. Operator verbs that talk to the API over HTTP arrive with the management API;
these are the ones a fresh install needs."""

from __future__ import annotations

import typer
from rich.console import Console

from shared.config import get_settings
from shared.crypto import generate_key_spec

cli = typer.Typer(help="Herald: queue-backed notification delivery.", no_args_is_help=True)
db_cli = typer.Typer(help="Database schema.", no_args_is_help=True)
cli.add_typer(db_cli, name="db")
console = Console(stderr=True)


@db_cli.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head", help="Alembic revision to upgrade to.")) -> None:
    """Apply migrations to HERALD_DATABASE_URL."""
    from shared.migrate import upgrade

    try:
        upgrade(get_settings().database_url, revision)
    except Exception as exc:
        console.print(f"[red]migration failed:[/red] {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
        raise typer.Exit(1) from None
    console.print("[green]database is at the latest schema[/green]")


@cli.command("gen-encryption-key")
def gen_encryption_key(
    key_id: str = typer.Option("k1", help="Key id stored beside each ciphertext."),
) -> None:
    """Print a new AES-256 key in HERALD_ENCRYPTION_KEYS form (kid:base64)."""
    typer.echo(generate_key_spec(key_id))


def main() -> None:
    cli()
