"""The data lifecycle: `backup`, `restore`, `purge` (see bot/storage/retention.py, backup.py)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from bot.cli.common import guard, settings_for
from bot.config import Settings
from bot.errors import ConfigError


def backup(
    ctx: typer.Context,
    to: Annotated[
        Path | None,
        typer.Option(
            "--to",
            help="Write the backup into this directory (default retention.backup_dir, "
            "else <data_dir>/backups). Only backups in retention.backup_dir are cleaned by "
            "the purge.",
        ),
    ] = None,
) -> None:
    """Back up the database (works while the bot runs). The keys are NOT in it."""
    settings = settings_for(ctx)
    data_dir = settings.storage.data_dir
    configured = settings.retention.backups_in(data_dir)
    target_dir = to if to is not None else configured
    path, pruned = guard(lambda: asyncio.run(_backup(settings, target_dir, to is None)))
    typer.echo(f"Backup written: {path} ({path.stat().st_size} bytes, integrity ok).")
    typer.echo(
        "It holds the database only, still sealed. Back up the keys directory "
        f"({data_dir / 'keys'}) separately and offline: reports open only with a staff key, "
        "and drafts and reply handles only with the bot's secrets file (bot_secrets.json)."
    )
    if to is not None and to.resolve() != configured.resolve():
        typer.echo(
            f"Note: the retention purge cleans backups in {configured} only; "
            "erase this copy yourself when its cases fall due."
        )
    if pruned:
        typer.echo(f"Deleted {pruned} older backups (keeping {settings.retention.keep_backups}).")


async def _backup(settings: Settings, target_dir: Path, prune: bool) -> tuple[Path, int]:
    from bot.key_ceremonies import admin_store
    from bot.storage.backup import backup as make_backup
    from bot.storage.retention import prune_backups

    async with admin_store(settings.storage.data_dir) as store:
        path = await make_backup(store, target_dir)
    pruned = prune_backups(target_dir, settings.retention.keep_backups) if prune else 0
    return path, pruned


def restore(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="A backup file made by `safeguard backup`.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Replace the database with a backup (stop the bot first). The current one is kept."""
    from bot.storage.backup import check_backup

    settings = settings_for(ctx)
    data_dir = settings.storage.data_dir
    guard(lambda: check_backup(file))
    if not yes:
        if not sys.stdin.isatty():
            guard(_refuse_without_tty)
        typer.confirm(
            f"Replace the database in {data_dir} with {file.name}? The current one is kept "
            "beside it",
            abort=True,
        )
    result = guard(lambda: asyncio.run(_restore(settings, file)))
    typer.echo(f"Restored {file} into {data_dir}: {result.cases} cases.")
    if result.previous is not None:
        typer.echo(
            f"The database as it was is kept as {result.previous}; it is not purged "
            "automatically: delete it once you are sure."
        )
    if result.purged_again:
        typer.echo(
            f"{result.purged_again} cases erased since the backup was made were erased again."
        )


def _refuse_without_tty() -> None:
    raise ConfigError("restore replaces the database: run it in a terminal, or pass --yes")


async def _restore(settings: Settings, file: Path) -> Any:
    from bot.storage.backup import restore as do_restore

    return await do_restore(settings.storage.data_dir, file, settings.retention)


def purge(
    ctx: typer.Context,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what is due; change nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """Erase now what the retention rules say is due, here and in the backups; then VACUUM."""
    settings = settings_for(ctx)
    result = guard(lambda: asyncio.run(_purge(settings, dry_run)))
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
        return
    verb = "Would erase" if dry_run else "Erased"
    typer.echo(
        f"{verb} {result.cases} cases (unfinished {result.unfinished_cases}, closed "
        f"{result.closed_cases}, escalated {result.escalated_cases}), {result.drafts} "
        f"unfinished drafts, {result.deliveries} old notices."
    )
    if dry_run:
        typer.echo(f"Would delete {result.backups_deleted} old backups. Nothing was changed.")
        return
    typer.echo(
        f"Backups: {result.backups_cleaned} cleaned, {result.backups_deleted} old ones deleted"
        + (
            f", {result.backups_unreadable} unreadable (check them)"
            if result.backups_unreadable
            else ""
        )
        + f". Database {'compacted (VACUUM)' if result.vacuumed else 'not compacted'}."
    )


async def _purge(settings: Settings, dry_run: bool) -> Any:
    from bot.key_ceremonies import OPERATOR, admin_store
    from bot.storage.retention import purge as run_purge

    data_dir = settings.storage.data_dir
    async with admin_store(data_dir) as store:
        return await run_purge(
            store,
            settings.retention,
            dry_run=dry_run,
            backup_dir=settings.retention.backups_in(data_dir),
            vacuum=True,
            actor=OPERATOR,
        )
