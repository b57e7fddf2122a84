"""The `safeguard` command line: one module per group of commands, assembled in `app`."""

from bot.cli.app import app

__all__ = ["app"]
