"""The `safeguard` command. Every subcommand has --help.

Any SafeguardError becomes one line on stderr and exit status 2: no tracebacks that might carry
data. Secrets (token, passphrase) are never printed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bot.cli import audit, bot, data, keys, nlu, reports

app = typer.Typer(
    help="An anonymous safeguarding reporting bot.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


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


for command in (bot.run, bot.queue, bot.health, bot.chat):
    app.command()(command)
app.command()(data.backup)
app.command()(data.restore)
app.command()(data.purge)
app.add_typer(keys.keys_app, name="keys")
app.add_typer(reports.reports_app, name="reports")
app.add_typer(nlu.nlu_app, name="nlu")
app.add_typer(audit.audit_app, name="audit")
