"""The `safeguard` command. Every subcommand has --help.

Any SafeguardError becomes one line on stderr and exit status 2: no tracebacks that might carry
data. Secrets (token, passphrase) are never printed.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from bot.config import Settings, load_settings
from bot.errors import ConfigError, SafeguardError

app = typer.Typer(
    help="An anonymous safeguarding reporting bot.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
keys_app = typer.Typer(help="Staff keys and the bot's secrets.", no_args_is_help=True)
reports_app = typer.Typer(
    help="Read reports (staff; needs the staff passphrase).", no_args_is_help=True
)
nlu_app = typer.Typer(help="Understand messages: parse, train, evaluate.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(reports_app, name="reports")
app.add_typer(nlu_app, name="nlu")

PASSPHRASE_ENV = "SAFEGUARD_KEY_PASSPHRASE"


@app.callback()
def main(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="Settings TOML (else $SAFEGUARD_CONFIG, else "
            "config/settings.toml, else built-in defaults).",
        ),
    ] = None,
) -> None:
    ctx.obj = config


def _settings(ctx: typer.Context, quiet: bool = False) -> Settings:
    """Load settings and set up logging; `quiet` keeps the terminal chat readable."""
    from bot.runtime import configure_logging

    settings: Settings = _guard(lambda: load_settings(ctx.obj))
    configure_logging("ERROR" if quiet else settings.logging.level)
    return settings


def _guard(action: Any) -> Any:
    try:
        return action()
    except SafeguardError as exc:
        typer.echo(f"safeguard: {exc}", err=True)
        raise typer.Exit(2) from None


def _passphrase(confirm: bool = False) -> str:
    value = os.environ.get(PASSPHRASE_ENV)
    if value:
        return value
    if not sys.stdin.isatty():
        raise ConfigError(f"no passphrase: set ${PASSPHRASE_ENV} or run in a terminal")
    first = getpass.getpass("Staff key passphrase: ")
    if confirm and getpass.getpass("Again: ") != first:
        raise ConfigError("the two passphrases differ")
    return first


@app.command()
def run(
    ctx: typer.Context,
    unlock: Annotated[
        bool,
        typer.Option(
            "--unlock",
            help="Unlock the staff key for this process (passphrase from "
            f"${PASSPHRASE_ENV} or a prompt), so /case shows report content in Telegram.",
        ),
    ] = False,
) -> None:
    """Run the Telegram bot (long polling against telegram.api_base)."""
    from bot.crypto import StaffKey
    from bot.telegram.app import run_bot
    from bot.terminal import DEMO_MARKER

    settings = _settings(ctx)
    if (settings.storage.data_dir / "keys" / DEMO_MARKER).exists():
        typer.echo(
            f"safeguard: {settings.storage.data_dir} holds demo keys made by "
            "`safeguard chat`; run `safeguard keys init` in a fresh data dir for the "
            "real bot",
            err=True,
        )
        raise typer.Exit(2)
    staff_key = (
        _guard(lambda: StaffKey.unlock(settings.storage.data_dir, _passphrase()))
        if unlock
        else None
    )
    _guard(lambda: asyncio.run(run_bot(settings, staff_key)))


@app.command()
def queue(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array.")] = False,
) -> None:
    """Open cases by level and age, as /queue shows them in the staff chat (no content)."""
    settings = _settings(ctx)
    cases = _guard(lambda: asyncio.run(_queue(settings)))
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


@app.command()
def health(ctx: typer.Context) -> None:
    """Exit 0 if the running bot can deliver alerts, 1 if not; prints a JSON report."""
    from bot.escalation.health import check
    from bot.storage.sqlite import SqliteStore

    settings = _settings(ctx)

    async def report() -> Any:
        async with SqliteStore(settings.storage.data_dir) as store:
            return await check(store, settings.health.stale_after_seconds)

    result = _guard(lambda: asyncio.run(report()))
    typer.echo(result.to_json())
    raise typer.Exit(0 if result.ok else 1)


@app.command()
def chat(ctx: typer.Context) -> None:
    """Report in the terminal: the same conversation, safety rules and store; no token needed."""
    from bot.terminal import chat as run_chat

    settings = _settings(ctx, quiet=True)
    try:
        _guard(lambda: asyncio.run(run_chat(settings)))
    except KeyboardInterrupt:
        typer.echo("")


@keys_app.command("init")
def keys_init(ctx: typer.Context) -> None:
    """Create the staff key pair (passphrase-protected) and the bot's secrets in the data dir."""
    from bot.crypto import create_keys

    settings = _settings(ctx)
    data_dir = settings.storage.data_dir
    fingerprint = _guard(lambda: create_keys(data_dir, _passphrase(confirm=True)))
    typer.echo(f"Created keys in {data_dir / 'keys'}")
    typer.echo(f"Staff key fingerprint: {fingerprint}")
    typer.echo("Keep the passphrase safe: without it no report can be read.")


async def _open_reports(settings: Settings, ref: str | None) -> list[dict[str, Any]]:
    from bot.crypto import StaffKey
    from bot.errors import NotFoundError
    from bot.reports.reference import normalise_reference
    from bot.storage.sqlite import SqliteStore

    key = StaffKey.unlock(settings.storage.data_dir, _passphrase())
    async with SqliteStore(settings.storage.data_dir) as store:
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
                entry["records"] = [
                    {
                        "kind": r.kind,
                        "created_at": r.created_at,
                        "content": json.loads(key.open_report(case.ref, r.sealed)),
                    }
                    for r in await store.records_for(case.ref)
                ]
            result.append(entry)
        return result


@reports_app.command("list")
def reports_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array.")] = False,
) -> None:
    """List cases: reference, level, status, alerts (no content)."""
    settings = _settings(ctx)
    cases = _guard(lambda: asyncio.run(_open_reports(settings, None)))
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
    ref: Annotated[str, typer.Argument(help="Reference code, e.g. K7FQ-3QXM-9PLA")],
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """Decrypt and show one case: the report, alert snapshots and follow-ups."""
    from bot.reports.answers import shown_answer

    settings = _settings(ctx)
    (case,) = _guard(lambda: asyncio.run(_open_reports(settings, ref)))
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


@nlu_app.command("parse")
def nlu_parse(ctx: typer.Context) -> None:
    """Read one message per line on stdin; write one JSON object per line (intent, urgency)."""
    from nlu.pipeline import build_nlu

    settings = _settings(ctx, quiet=True)
    nlu = _guard(lambda: build_nlu(settings.nlu.engine, settings.nlu.rasa_url))

    async def parse_lines() -> None:
        try:
            for line in sys.stdin:
                text = line.rstrip("\n")
                result = await nlu.parse(text)
                sys.stdout.write(json.dumps(result.to_json(), ensure_ascii=False) + "\n")
                sys.stdout.flush()
        finally:
            close = getattr(nlu.model, "close", None)
            if close is not None:
                await close()

    asyncio.run(parse_lines())


@nlu_app.command("train")
def nlu_train(ctx: typer.Context) -> None:
    """Train the embedded model from nlu/data (deterministic; the file is named by a data hash)."""
    import time

    from nlu.pipeline import DEFAULT_MODEL_DIR, load_embedded_model

    _settings(ctx)
    started = time.perf_counter()
    model = _guard(lambda: load_embedded_model(retrain=True))
    typer.echo(
        f"Trained on data {model.fingerprint}: {len(model.classes)} intents, "
        f"{len(model.columns)} features, {time.perf_counter() - started:.1f} s; "
        f"saved in {DEFAULT_MODEL_DIR}"
    )


@nlu_app.command("evaluate")
def nlu_evaluate(
    ctx: typer.Context,
    test_file: Annotated[
        Path | None, typer.Option("--test", help="Held-out test set (Rasa YAML).")
    ] = None,
    cv: Annotated[
        int, typer.Option("--cv", help="Also run k-fold cross-validation on the training data.")
    ] = 0,
    matrix: Annotated[
        Path, typer.Option("--matrix", help="Where to write the confusion-matrix PNG.")
    ] = Path("nlu-confusion.png"),
) -> None:
    """Per-intent precision/recall/F1, urgent recall and false-escalation rate on held-out data."""
    from nlu.evaluation import DEFAULT_TEST_PATH, cross_validate, evaluate
    from nlu.pipeline import build_nlu
    from nlu.training_data import load_training_data

    settings = _settings(ctx, quiet=True)
    path = test_file or DEFAULT_TEST_PATH

    def run() -> None:
        nlu = build_nlu(settings.nlu.engine, settings.nlu.rasa_url)
        data = load_training_data()
        result = evaluate(nlu, load_training_data(path), data.intents)
        typer.echo(
            f"Held-out test set {path} ({len(result.gold)} messages), "
            f"engine {settings.nlu.engine}:\n"
        )
        typer.echo(result.table())
        result.confusion_png(matrix)
        typer.echo(f"\nconfusion matrix written to {matrix}")
        if result.missed:
            typer.echo(f"\nurgent messages not escalated: {len(result.missed)}")
        if cv:
            folds = cross_validate(data, cv, nlu.rules, nlu.policy)
            typer.echo(
                f"\n{cv}-fold cross-validation on the training data ({len(folds.gold)} messages):\n"
            )
            typer.echo(folds.table())

    _guard(run)
