"""Callback data of every inline button. aiogram packs and validates it (64 bytes at most).

Anything that does not unpack into one of these is forged or stale and gets a polite refusal.
"""

from __future__ import annotations

import logging

from aiogram.exceptions import TelegramAPIError
from aiogram.filters.callback_data import CallbackData
from aiogram.types import CallbackQuery
from pydantic import Field

log = logging.getLogger("safeguard.telegram")


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
    # Escalation id: a SQLite row id, so forged data out of its 64-bit range is refused here
    # rather than overflowing in the store.
    e: int = Field(ge=1, le=2**63 - 1)


async def answer_query(
    query: CallbackQuery, text: str | None = None, *, show_alert: bool = False
) -> None:
    """Answer a button press, if Telegram still lets us: it refuses a query older than about
    15 seconds ("query is too old"), as a press re-delivered after a restart always is. Only
    the spinner on the button depends on this answer, so the press is still handled."""
    try:
        await query.answer(text, show_alert=show_alert or None)
    except TelegramAPIError as exc:
        log.warning("callback_not_answered error=%s", type(exc).__name__)
