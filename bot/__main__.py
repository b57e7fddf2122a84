"""`python -m bot` is the `safeguard` command."""

from bot.cli import app

app(prog_name="safeguard")
