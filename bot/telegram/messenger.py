"""Turns engine replies into Telegram messages for one private chat."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError, TelegramBadRequest, TelegramForbiddenError
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from bot.dialogue.engine import Button, Reply
from bot.telegram.callbacks import ReporterAction
from bot.telegram.limits import SEND_URGENTLY

log = logging.getLogger("safeguard.telegram")

TELEGRAM_TEXT_LIMIT = 4096
DELETE_BATCH = 100
# How long the 999 line after an alarm keeps trying through a Telegram outage, after the
# request's own retries: long enough for a real outage, bounded so a task cannot live forever.
URGENT_RETRY_FIRST_SECONDS = 2.0
URGENT_RETRY_MAX_SECONDS = 15.0
URGENT_RETRY_FOR_SECONDS = 600.0


def keyboard(rows: tuple[tuple[Button, ...], ...]) -> InlineKeyboardMarkup | None:
    if not rows:
        return None
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(
                    text=b.label,
                    callback_data=ReporterAction(a=b.action, s=b.step, v=b.value, t=b.turn).pack(),
                )
                for b in row
            ]
            for row in rows
        ]
    )


def split_html(text: str, limit: int = TELEGRAM_TEXT_LIMIT) -> list[str]:
    """Split at line breaks so each part fits Telegram's limit.

    Our templates keep tags within a line and the reporter's words are escaped, so a line break
    is always a safe place to cut. A single over-long line is cut at the limit (escaped text has
    no tags, and we back off so an `&amp;`-style entity is not split).
    """
    parts: list[str] = []
    current = ""
    for line in text.split("\n"):
        while len(line) > limit:
            cut = limit
            amp = line.rfind("&", cut - 8, cut)
            if amp != -1 and ";" not in line[amp:cut]:
                cut = amp
            if current:
                parts.append(current)
                current = ""
            parts.append(line[:cut])
            line = line[cut:]
        candidate = f"{current}\n{line}" if current else line
        if len(candidate) > limit:
            parts.append(current)
            current = line
        else:
            current = candidate
    if current.strip():
        parts.append(current)
    return [p for p in parts if p.strip()] or ["…"]


class TelegramMessenger:
    def __init__(self, bot: Bot, chat_id: int, inbound_message_id: int | None) -> None:
        self.bot = bot
        self.chat_id = chat_id
        self.inbound_message_id = inbound_message_id

    async def send(self, reply: Reply) -> list[int]:
        parts = split_html(reply.html)
        sent: list[int] = []
        token = SEND_URGENTLY.set(reply.urgent)
        try:
            for index, part in enumerate(parts):
                markup = keyboard(reply.buttons) if index == len(parts) - 1 else None
                message_id = await self._send_part(part, markup, patient=reply.urgent)
                if message_id is None:
                    break
                sent.append(message_id)
        finally:
            SEND_URGENTLY.reset(token)
        return sent

    async def _send_part(
        self, text: str, markup: InlineKeyboardMarkup | None, *, patient: bool
    ) -> int | None:
        """One message; None if Telegram did not take it. The 999 line after an alarm keeps
        trying through an outage (a child who said they are in danger must get the numbers),
        other replies give up after the request retries and are said again with the
        reporter's next message."""
        delay, waited = URGENT_RETRY_FIRST_SECONDS, 0.0
        while True:
            try:
                message = await self.bot.send_message(self.chat_id, text, reply_markup=markup)
                return message.message_id
            except (TelegramBadRequest, TelegramForbiddenError) as exc:
                log.error("reply_not_sent error=%s", type(exc).__name__)  # retrying cannot help
                return None
            except TelegramAPIError as exc:
                if not patient or waited >= URGENT_RETRY_FOR_SECONDS:
                    log.error("reply_not_sent error=%s", type(exc).__name__)
                    return None
                log.warning("urgent_reply_retry error=%s retry_in=%.0f", type(exc).__name__, delay)
            await asyncio.sleep(delay)
            waited += delay
            delay = min(delay * 2, URGENT_RETRY_MAX_SECONDS)

    async def remove_inbound(self) -> None:
        if self.inbound_message_id is None:
            return
        try:
            await self.bot.delete_message(self.chat_id, self.inbound_message_id)
        except TelegramAPIError as exc:
            log.warning("media_not_deleted error=%s", type(exc).__name__)

    async def clear(self, message_ids: Sequence[int]) -> None:
        ids = sorted(
            {*message_ids, *([self.inbound_message_id] if self.inbound_message_id else [])}
        )
        for start in range(0, len(ids), DELETE_BATCH):
            batch = ids[start : start + DELETE_BATCH]
            try:
                await self.bot.delete_messages(self.chat_id, batch)
            except TelegramBadRequest:
                # Some are too old (48 h) or already gone: delete the rest one by one.
                for message_id in batch:
                    with contextlib.suppress(TelegramAPIError):
                        await self.bot.delete_message(self.chat_id, message_id)
            except TelegramAPIError as exc:
                log.warning("clear_failed error=%s", type(exc).__name__)
