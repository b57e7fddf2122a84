"""`safeguard keys ...`: staff keys and the bot's secrets."""

from __future__ import annotations

import typer

from bot.cli.common import guard, passphrase, settings_for

keys_app = typer.Typer(help="Staff keys and the bot's secrets.", no_args_is_help=True)


@keys_app.command("init")
def keys_init(ctx: typer.Context) -> None:
    """Create the staff key pair (passphrase-protected) and the bot's secrets in the data dir."""
    from bot.crypto import create_keys

    settings = settings_for(ctx)
    data_dir = settings.storage.data_dir
    fingerprint = guard(lambda: create_keys(data_dir, passphrase(confirm=True)))
    typer.echo(f"Created keys in {data_dir / 'keys'}")
    typer.echo(f"Staff key fingerprint: {fingerprint}")
    typer.echo("Keep the passphrase safe: without it no report can be read.")
