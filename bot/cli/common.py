"""What every command shares: settings, the one-line error exit, the staff passphrase."""

from __future__ import annotations

import getpass
import os
import sys
from typing import Any

import typer

from bot.config import Settings, load_settings
from bot.errors import ConfigError, SafeguardError

PASSPHRASE_ENV = "SAFEGUARD_KEY_PASSPHRASE"


def settings_for(ctx: typer.Context, quiet: bool = False) -> Settings:
    """Load settings and set up logging; `quiet` keeps the terminal chat readable."""
    from bot.runtime import configure_logging

    settings: Settings = guard(lambda: load_settings(ctx.obj))
    configure_logging("ERROR" if quiet else settings.logging.level)
    return settings


def guard(action: Any) -> Any:
    try:
        return action()
    except SafeguardError as exc:
        typer.echo(f"safeguard: {exc}", err=True)
        raise typer.Exit(2) from None


def passphrase(confirm: bool = False) -> str:
    value = os.environ.get(PASSPHRASE_ENV)
    if value:
        return value
    if not sys.stdin.isatty():
        raise ConfigError(f"no passphrase: set ${PASSPHRASE_ENV} or run in a terminal")
    first = getpass.getpass("Staff key passphrase: ")
    if confirm and getpass.getpass("Again: ") != first:
        raise ConfigError("the two passphrases differ")
    return first
