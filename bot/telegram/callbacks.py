"""Callback data of every inline button. aiogram packs and validates it (64 bytes at most).

Anything that does not unpack into one of these is forged or stale and gets a polite refusal.
"""

from __future__ import annotations

from aiogram.filters.callback_data import CallbackData


class ReporterAction(CallbackData, prefix="r"):
    """A reporter's button: `turn` ties it to the message it was shown on."""

    a: str  # action: audience, option, skip, back, restart, send, change, edit, summary, exit
    s: str = ""  # step
    v: str = ""  # value
    t: int = 0  # turn


class AlertAction(CallbackData, prefix="alert"):
    """A staff button on an alert. Trusted only if the bot put that alert on that very
    message (`SqliteStore.alert_shown_in`), so forged data naming another alert is refused."""

    a: str  # "ack" | "take"
    e: int  # escalation id
