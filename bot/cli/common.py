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


NEW_PASSPHRASE_ENV = "SAFEGUARD_NEW_KEY_PASSPHRASE"
STAFF_NAME_ENV = "SAFEGUARD_STAFF_NAME"


def new_passphrase(whose: str) -> str:
    """A passphrase for a key being made, when another member's unlocks something too."""
    value = os.environ.get(NEW_PASSPHRASE_ENV)
    if value:
        return value
    if not sys.stdin.isatty():
        raise ConfigError(f"no passphrase for {whose}: set ${NEW_PASSPHRASE_ENV} or use a terminal")
    first = getpass.getpass(f"New passphrase for {whose}: ")
    if getpass.getpass("Again: ") != first:
        raise ConfigError("the two passphrases differ")
    return first


def staff_name(settings: Settings, given: str | None) -> str:
    """Whose key to unlock: --as, else $SAFEGUARD_STAFF_NAME, else the only key there is."""
    from bot.crypto import StaffKey

    name = given or os.environ.get(STAFF_NAME_ENV)
    if name:
        return name
    names = StaffKey.names(settings.storage.data_dir)
    if len(names) == 1:
        return names[0]
    if not names:
        raise ConfigError("no staff key in this data dir; run `safeguard keys init`")
    raise ConfigError(f"say whose key to unlock with --as NAME (one of: {', '.join(names)})")


def unlock(settings: Settings, given: str | None) -> Any:
    """Unlock a staff member's key (StaffKey) with their passphrase."""
    from bot.crypto import StaffKey

    name = staff_name(settings, given)
    return StaffKey.unlock(settings.storage.data_dir, name, passphrase())


AS_HELP = (
    f"Whose staff key to unlock (else ${STAFF_NAME_ENV}, else the only one); "
    f"passphrase from ${PASSPHRASE_ENV} or a prompt."
)
