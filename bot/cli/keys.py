"""`safeguard keys ...`: staff keys and the bot's secrets (the key ceremonies in the README)."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Annotated

import typer

from bot.cli.common import (
    AS_HELP,
    NEW_PASSPHRASE_ENV,
    PASSPHRASE_ENV,
    guard,
    new_passphrase,
    passphrase,
    settings_for,
    unlock,
)

keys_app = typer.Typer(
    help="Staff keys (one per person) and the bot's secrets.", no_args_is_help=True
)

NAME_HELP = "The staff member's name, as on the rota, e.g. 'Priya Shah'."


@keys_app.command("init")
def keys_init(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", help=NAME_HELP)] = "lead",
) -> None:
    """Create the bot's secrets and the first staff member's key (passphrase-protected)."""
    from bot.key_ceremonies import init_keys

    settings = settings_for(ctx)
    data_dir = settings.storage.data_dir
    public = guard(lambda: asyncio.run(init_keys(data_dir, name, passphrase(confirm=True))))
    typer.echo(f"Created keys in {data_dir / 'keys'}")
    typer.echo(f"Staff key of {public.name}: fingerprint {public.fingerprint}")
    typer.echo("Keep the passphrase safe: without it this key opens nothing.")


@keys_app.command("add-staff")
def keys_add_staff(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help=NAME_HELP)],
    by: Annotated[
        str | None,
        typer.Option(
            "--by",
            help="An existing member who shares every record they can open with the "
            f"newcomer (their passphrase from ${PASSPHRASE_ENV}; the newcomer's from "
            f"${NEW_PASSPHRASE_ENV} or a prompt).",
        ),
    ] = None,
) -> None:
    """Give a new staff member a key: new reports are sealed to them from now on."""
    from bot.key_ceremonies import add_staff

    settings = settings_for(ctx)
    data_dir = settings.storage.data_dir
    sharer = guard(lambda: unlock(settings, by)) if by else None
    if sharer is not None:
        new = guard(lambda: new_passphrase(name))
    else:
        new = os.environ.get(NEW_PASSPHRASE_ENV) or guard(lambda: passphrase(confirm=True))
    public, shared = guard(lambda: asyncio.run(add_staff(data_dir, name, new, sharer)))
    typer.echo(f"Added {public.name}: fingerprint {public.fingerprint}")
    if sharer is not None:
        typer.echo(f"{sharer.name} shared {shared} records with {public.name}.")
    else:
        typer.echo(
            f"{public.name} can read reports made from now on. To share earlier ones: "
            f"`safeguard keys share {public.name} --by NAME`."
        )


@keys_app.command("share")
def keys_share(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The member to share records with.")],
    by: Annotated[str, typer.Option("--by", help="The member who shares. " + AS_HELP)],
) -> None:
    """Share every record one member can open with another (e.g. a newcomer's archive)."""
    from bot.key_ceremonies import share_records

    settings = settings_for(ctx)
    sharer = guard(lambda: unlock(settings, by))
    shared = guard(lambda: asyncio.run(share_records(settings.storage.data_dir, sharer, name)))
    typer.echo(f"{sharer.name} shared {shared} records with {name}.")


@keys_app.command("remove-staff")
def keys_remove_staff(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help=NAME_HELP)],
    force: Annotated[
        bool,
        typer.Option("--force", help="Remove even if some records could then be read by nobody."),
    ] = False,
) -> None:
    """Remove a leaver: their key and every copy of a data key sealed to it are deleted."""
    from bot.key_ceremonies import remove_staff

    settings = settings_for(ctx)
    public = guard(lambda: asyncio.run(remove_staff(settings.storage.data_dir, name, force=force)))
    typer.echo(f"Removed {public.name} (fingerprint {public.fingerprint}).")
    typer.echo("Records stay readable by everyone else; nothing was re-encrypted.")


@keys_app.command("rotate")
def keys_rotate(
    ctx: typer.Context,
    staff: Annotated[
        str | None,
        typer.Option(
            "--staff",
            help="Rotate this member's key pair instead of the bot's secrets (their "
            f"passphrase from ${PASSPHRASE_ENV}; a new one from ${NEW_PASSPHRASE_ENV}, "
            "else it stays the same).",
        ),
    ] = None,
) -> None:
    """Rotate the bot's secrets (stop the bot first), or one member's key pair."""
    from bot.key_ceremonies import rotate_bot_secrets, rotate_staff_key

    settings = settings_for(ctx)
    data_dir = settings.storage.data_dir
    if staff is None:
        generation, resealed = guard(lambda: asyncio.run(rotate_bot_secrets(data_dir)))
        typer.echo(
            f"The bot's secrets are now generation {generation}; {resealed} items sealed "
            "again under them. Start the bot again."
        )
        return
    old_passphrase = guard(passphrase)
    old = guard(lambda: unlock(settings, staff))
    new = os.environ.get(NEW_PASSPHRASE_ENV) or old_passphrase
    public, moved = guard(lambda: asyncio.run(rotate_staff_key(data_dir, old, new)))
    typer.echo(
        f"{public.name} has a new key: fingerprint {public.fingerprint} "
        f"(was {old.fingerprint}); {moved} records moved to it."
    )


@keys_app.command("list")
def keys_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array.")] = False,
) -> None:
    """Staff keys: name, fingerprint, when made, how many records each can open."""
    from bot.key_ceremonies import list_staff_keys

    settings = settings_for(ctx)
    keys = guard(lambda: asyncio.run(list_staff_keys(settings.storage.data_dir)))
    if as_json:
        typer.echo(json.dumps([k.__dict__ for k in keys], indent=2))
        return
    for k in keys:
        here = "" if k.private_key_here else "  (private key held elsewhere)"
        typer.echo(f"{k.name:<24} {k.fingerprint}  since {k.created_at}  records {k.records}{here}")


@keys_app.command("export-public")
def keys_export_public(ctx: typer.Context) -> None:
    """Print every staff public key as JSON (to check fingerprints, or to keep a copy)."""
    from bot.crypto import staff_public_keys

    settings = settings_for(ctx)
    keys = guard(lambda: staff_public_keys(settings.storage.data_dir))
    typer.echo(json.dumps([k.to_json() for k in keys], indent=2))
