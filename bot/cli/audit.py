"""`safeguard audit ...`: the hash-chained trail of staff actions and key operations."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer

from bot.cli.common import guard, settings_for
from bot.config import Settings

audit_app = typer.Typer(
    help="The audit trail: who did what to which case, and every key operation.",
    no_args_is_help=True,
)


async def _verify(settings: Settings) -> Any:
    from bot.key_ceremonies import admin_store

    async with admin_store(settings.storage.data_dir) as store:
        return await store.verify_audit()


@audit_app.command("verify")
def audit_verify(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """Check the whole chain. Exit 0 if intact, 1 at the first edited, removed or moved entry.

    Note the printed head now and then (e.g. in the on-call log book): the chain alone cannot
    show that its newest entries were cut off, but a head that no longer appears can.
    """
    settings = settings_for(ctx)
    report = guard(lambda: asyncio.run(_verify(settings)))
    if as_json:
        typer.echo(json.dumps(report.to_json()))
    elif report.ok:
        typer.echo(f"Audit trail intact: {report.entries} entries, head {report.head}.")
    else:
        typer.echo(
            f"AUDIT TRAIL BROKEN at entry {report.first_bad_seq}: {report.problem}. "
            f"{report.entries} entries before it verify (head {report.head})."
        )
    raise typer.Exit(0 if report.ok else 1)


@audit_app.command("show")
def audit_show(
    ctx: typer.Context,
    ref: Annotated[str | None, typer.Argument(help="Only this case's entries.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array.")] = False,
) -> None:
    """List entries, oldest first (who, what, which case, when; never content)."""
    from bot.reports.reference import normalise_reference
    from bot.storage.sqlite import SqliteStore

    settings = settings_for(ctx)
    canonical = normalise_reference(ref) if ref else None
    if ref and canonical is None:
        typer.echo(f"safeguard: not a reference code: {ref!r}", err=True)
        raise typer.Exit(2)

    async def entries() -> Any:
        async with SqliteStore(settings.storage.data_dir) as store:
            return await store.audit_entries(canonical)

    found = guard(lambda: asyncio.run(entries()))
    if as_json:
        typer.echo(json.dumps([e.__dict__ for e in found], indent=2))
        return
    for e in found:
        typer.echo(
            f"{e.seq:>6}  {e.at}  {e.actor:<16} {e.action:<20} {e.case_ref or '-':<14} "
            f"{e.detail or ''}"
        )
