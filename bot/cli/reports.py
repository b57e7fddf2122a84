"""`safeguard reports ...`: the staff view of cases, decrypted with a staff key."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from bot.cli.common import AS_HELP, guard, settings_for, unlock
from bot.config import Settings
from bot.reports.reading import CaseReader

reports_app = typer.Typer(
    help="Read reports (staff; needs a staff passphrase).", no_args_is_help=True
)


async def _open_reports(
    settings: Settings, ref: str | None, as_name: str | None, action: str = "case_viewed"
) -> list[dict[str, Any]]:
    """Cases as dicts; with `ref`, that one case with its records opened (and audited)."""
    from bot.crypto import BotCrypto
    from bot.errors import NotFoundError
    from bot.reports.reference import normalise_reference
    from bot.storage.sqlite import SqliteStore

    key = unlock(settings, as_name)
    bot_crypto = BotCrypto.load(settings.storage.data_dir)
    async with SqliteStore(settings.storage.data_dir, secrets=bot_crypto) as store:
        if ref is None:
            cases = await store.list_cases()
        else:
            canonical = normalise_reference(ref)
            if canonical is None:
                raise NotFoundError(f"not a reference code: {ref!r}")
            cases = [await store.get_case(canonical)]
        result = []
        for case in cases:
            entry: dict[str, Any] = {
                "reference": case.ref,
                "level": case.level,
                "status": case.status,
                "audience": case.audience,
                "created_at": case.created_at,
                "submitted_at": case.submitted_at,
                "can_reply": case.can_reply,
                "outcome": case.outcome,
                "closed_at": case.closed_at,
                "assigned_to": case.assigned_to,
                "read_by": key.name,
                "alerts": [
                    {
                        "level": e.level,
                        "reasons": list(e.reasons),
                        "raised_at": e.created_at,
                        "acknowledged_by": e.acknowledged_by,
                        "acknowledged_at": e.acknowledged_at,
                    }
                    for e in await store.escalations_for(case.ref)
                ],
            }
            if ref is not None:
                reader = CaseReader(store, key)
                entry["records"] = [
                    {
                        "kind": r.kind,
                        "created_at": r.created_at,
                        "content": await _open_json(reader, case.ref, r.sealed),
                    }
                    for r in await store.records_for(case.ref)
                ]
                entry["timeline"] = [
                    {
                        "at": e.at,
                        "actor": e.actor,
                        "action": e.action,
                        "detail": e.detail,
                        **(
                            {"note": (await _open_text(reader, case.ref, e.sealed))}
                            if e.sealed is not None
                            else {}
                        ),
                    }
                    for e in await store.case_events(case.ref)
                ]
                async with store.transaction() as tx:
                    await tx.audit(key.name, action, case.ref)
            result.append(entry)
        return result


async def _open_json(reader: CaseReader, ref: str, sealed: bytes) -> Any:
    text = await _open_text(reader, ref, sealed)
    return None if text is None else json.loads(text)


async def _open_text(reader: CaseReader, ref: str, sealed: bytes) -> str | None:
    """None for a record this key was never given (added to the team after it was written)."""
    from bot.errors import NotReadableError

    try:
        return (await reader.open(ref, sealed)).decode()
    except NotReadableError:
        return None


@reports_app.command("list")
def reports_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array.")] = False,
    as_name: Annotated[str | None, typer.Option("--as", help=AS_HELP)] = None,
) -> None:
    """List cases: reference, level, status, alerts (no content)."""
    settings = settings_for(ctx)
    cases = guard(lambda: asyncio.run(_open_reports(settings, None, as_name)))
    if as_json:
        typer.echo(json.dumps(cases, indent=2, ensure_ascii=False))
        return
    if not cases:
        typer.echo("No cases.")
    for c in cases:
        state = "submitted" if c["submitted_at"] else "in progress"
        acked = sum(1 for a in c["alerts"] if a["acknowledged_at"])
        typer.echo(
            f"{c['reference']}  {c['level']:<9} {c['status']:<6} {state:<11} "
            f"alerts {len(c['alerts'])} (acknowledged {acked})  {c['created_at']}"
        )


@reports_app.command("show")
def reports_show(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="Reference code, e.g. K7FQ-3QXM-9PTA")],
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
    as_name: Annotated[str | None, typer.Option("--as", help=AS_HELP)] = None,
) -> None:
    """Decrypt and show one case: the report, alert snapshots and follow-ups."""
    from bot.reports.answers import shown_answer

    settings = settings_for(ctx)
    (case,) = guard(lambda: asyncio.run(_open_reports(settings, ref, as_name)))
    if as_json:
        typer.echo(json.dumps(case, indent=2, ensure_ascii=False))
        return
    typer.echo(
        f"Case {case['reference']}  level {case['level']}  status {case['status']}  "
        f"audience {case['audience'] or '-'}  team can reply: "
        f"{'yes' if case['can_reply'] else 'no'}"
    )
    for alert in case["alerts"]:
        ack = (
            f"acknowledged by {alert['acknowledged_by']} at {alert['acknowledged_at']}"
            if alert["acknowledged_at"]
            else "NOT acknowledged"
        )
        typer.echo(
            f"  alert {alert['level']} at {alert['raised_at']}: "
            f"{', '.join(alert['reasons'])} ({ack})"
        )
    for record in case["records"]:
        typer.echo(f"\n--- {record['kind']} at {record['created_at']} ---")
        content = record["content"]
        if content is None:
            typer.echo("(not sealed to your key: ask a colleague to share it)")
            continue
        if content.get("trigger"):
            typer.echo(f"Message that raised the alert: {content['trigger']}")
        for line in content.get("first_messages", []):
            typer.echo(f"First message: {line}")
        for answer in content.get("answers", []):
            typer.echo(f"{answer['label']}: {shown_answer(answer)}")
        for line in content.get("changed_messages", []):
            typer.echo(f"Changed message: {line}")
        if record["kind"] == "followup":
            typer.echo(f"Added: {content.get('text', '')}")


@reports_app.command("export")
def reports_export(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="Reference code, e.g. K7FQ-3QXM-9PTA")],
    fmt: Annotated[
        str, typer.Option("--format", help="json or pdf.", case_sensitive=False)
    ] = "json",
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="File to write (made 0600); else standard output."),
    ] = None,
    as_name: Annotated[str | None, typer.Option("--as", help=AS_HELP)] = None,
) -> None:
    """A case as a referral for children's social care or the police (decrypted; audited)."""
    from bot.dialogue.content import Content
    from bot.reports.referral import build_referral, referral_pdf
    from bot.storage.sqlite import now_iso

    fmt = fmt.lower()
    if fmt not in ("json", "pdf"):
        typer.echo("safeguard: --format is json or pdf", err=True)
        raise typer.Exit(2)
    if fmt == "pdf" and output is None and sys.stdout.isatty():
        typer.echo("safeguard: a PDF goes to a file: add --output FILE.pdf", err=True)
        raise typer.Exit(2)
    settings = settings_for(ctx)
    wording = guard(
        lambda: Content.load(settings.dialogue.content_dir, settings.dialogue.language)
    ).wording
    (case,) = guard(
        lambda: asyncio.run(_open_reports(settings, ref, as_name, action=f"exported_{fmt}"))
    )
    referral = build_referral(
        case,
        case["timeline"],
        wording=wording,
        exported_by=case["read_by"],
        exported_at=now_iso(),
    )
    data = (
        referral_pdf(referral, wording=wording)
        if fmt == "pdf"
        else (json.dumps(referral, indent=2, ensure_ascii=False) + "\n").encode()
    )
    if output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    guard(lambda: _write_private(output, data))
    typer.echo(f"Wrote {output} ({len(data)} bytes). It is not sealed: handle it as the case.")


def _write_private(path: Path, data: bytes) -> None:
    """An export holds a child's details in the clear: only its owner may read the file."""
    from bot.errors import ConfigError

    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(data)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None
