"""Running the bot: `run`, `queue`, `health`, `chat`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from bot.cli.common import AS_HELP, guard, settings_for
from bot.cli.common import unlock as unlock_key
from bot.config import Settings


def run(
    ctx: typer.Context,
    unlock: Annotated[
        bool,
        typer.Option(
            "--unlock",
            help="Unlock a staff member's key for this process, so /case shows report "
            "content in Telegram (whose: --as).",
        ),
    ] = False,
    as_name: Annotated[str | None, typer.Option("--as", help=AS_HELP)] = None,
) -> None:
    """Run the Telegram bot (long polling against telegram.api_base)."""
    from bot.terminal import DEMO_MARKER

    settings = settings_for(ctx)
    # Before anything is opened or imported: damaged keys stop the bot here, with one line.
    guard(lambda: check_keys(settings.storage.data_dir))
    from bot.telegram.app import run_bot

    if (settings.storage.data_dir / "keys" / DEMO_MARKER).exists():
        typer.echo(
            f"safeguard: {settings.storage.data_dir} holds demo keys made by "
            "`safeguard chat`; run `safeguard keys init` in a fresh data dir for the "
            "real bot",
            err=True,
        )
        raise typer.Exit(2)
    staff_key = guard(lambda: unlock_key(settings, as_name)) if unlock else None
    guard(lambda: asyncio.run(run_bot(settings, staff_key)))


def check_keys(data_dir: Path) -> None:
    """Refuse to start on a missing or damaged key file, before the database is opened (the
    bot never falls back to storing anything unsealed): name the file and say what to do.

    With a database already there, the only repair is the keys it was sealed with: new keys
    (`safeguard keys init`) could never open the reports already stored. A well-formed
    bot_secrets.json that is not the one the database was used with is refused here too,
    reading the database only (opening the store makes the same check, and records)."""
    from bot.crypto import BOT_SECRETS_FILE, KEYS_DIRNAME, BotCrypto
    from bot.errors import CryptoError
    from bot.storage.sqlite import DB_NAME, recorded_secret_checks

    keys_dir = data_dir / KEYS_DIRNAME
    try:
        bot_crypto = BotCrypto.load(data_dir)
    except CryptoError as exc:
        problem = str(exc)
        if problem.startswith(f"{BOT_SECRETS_FILE}:"):  # checked after reading: the bare name
            problem = f"{keys_dir / BOT_SECRETS_FILE}{problem[len(BOT_SECRETS_FILE) :]}"
        problem = problem.split("; run `safeguard keys init`")[0]
        problem = problem.split("; add one with `safeguard keys add-staff")[0]
        if not keys_dir.is_dir():
            problem = f"{keys_dir} does not exist"
        if (data_dir / DB_NAME).exists():
            advice = (
                f"the bot will not start without its keys: restore {keys_dir} from your "
                "offline backup of it (new keys could not open the reports already stored)"
            )
        else:
            advice = (
                f"the bot will not start: restore {keys_dir} from your offline backup of it, "
                "or for a new install run `safeguard keys init` in an empty data directory"
            )
        raise type(exc)(f"{problem}; {advice}") from None
    if (data_dir / DB_NAME).exists():
        bot_crypto.match_secret_checks(recorded_secret_checks(data_dir / DB_NAME))


def queue(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array.")] = False,
) -> None:
    """Open cases by level and age, as /queue shows them in the staff chat (no content)."""
    settings = settings_for(ctx)
    cases = guard(lambda: asyncio.run(_queue(settings)))
    if as_json:
        typer.echo(json.dumps(cases, indent=2, ensure_ascii=False))
        return
    if not cases:
        typer.echo("No open cases.")
    for c in cases:
        typer.echo(
            f"{c['reference']}  {c['level']:<9} opened {c['created_at']}  "
            f"{'NOT acknowledged' if c['unacknowledged_alerts'] else 'acknowledged':<16}  "
            f"taken by {c['taken_by'] or '-'}"
            f"{'' if c['submitted_at'] else '  (report not finished)'}"
        )


async def _queue(settings: Settings) -> list[dict[str, Any]]:
    from collections import Counter

    from bot.escalation.desk import LEVEL_ORDER
    from bot.storage.sqlite import SqliteStore

    async with SqliteStore(settings.storage.data_dir) as store:
        cases = await store.open_cases()
        waiting = Counter(e.case_ref for e in await store.unacknowledged())
    cases.sort(key=lambda c: (LEVEL_ORDER.index(c.level), waiting[c.ref] == 0, c.created_at))
    return [
        {
            "reference": c.ref,
            "level": c.level,
            "created_at": c.created_at,
            "submitted_at": c.submitted_at,
            "unacknowledged_alerts": waiting[c.ref],
            "taken_by": c.assigned_to,
        }
        for c in cases
    ]


def health(ctx: typer.Context) -> None:
    """Exit 0 if the running bot can deliver alerts, 1 if not; prints a JSON report."""
    from bot.escalation.health import check
    from bot.storage.sqlite import SqliteStore

    settings = settings_for(ctx)

    async def report() -> Any:
        async with SqliteStore(settings.storage.data_dir) as store:
            return await check(store, settings.health.stale_after_seconds)

    result = guard(lambda: asyncio.run(report()))
    typer.echo(result.to_json())
    raise typer.Exit(0 if result.ok else 1)


def chat(ctx: typer.Context) -> None:
    """Report in the terminal: the same conversation, safety rules and store; no token needed."""
    from bot.terminal import chat as run_chat

    settings = settings_for(ctx, quiet=True)
    try:
        guard(lambda: asyncio.run(run_chat(settings)))
    except KeyboardInterrupt:
        typer.echo("")
