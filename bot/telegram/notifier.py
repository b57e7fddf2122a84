"""Staff messages over Telegram: send what the delivery worker hands over, and edit alerts when
someone acknowledges or takes a case.

Alerts use a Bot whose session has no retry middleware: the worker does its own retries and
back-off per recipient, so one throttled chat never holds up the direct message to the person
on call.
"""

from __future__ import annotations

import logging

from aiogram import Bot
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramRetryAfter,
)
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup
from aiohttp import ClientConnectorError

from bot.escalation.desk import StaffDesk, StaffMessage
from bot.escalation.outbox import DeliveryDelayed, DeliveryUncertain, RecipientUnreachable
from bot.escalation.paging import Paging
from bot.escalation.policy import STAFF_CHAT, dm_name
from bot.telegram.callbacks import AlertAction
from bot.telegram.messenger import split_html

log = logging.getLogger("safeguard.telegram")


def alert_keyboard(message: StaffMessage) -> InlineKeyboardMarkup | None:
    if not message.buttons:
        return None
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(
                    text=b.label,
                    callback_data=AlertAction(a=b.action, e=b.escalation_id).pack(),
                )
                for b in row
            ]
            for row in message.buttons
        ]
    )


class TelegramStaffNotifier:
    def __init__(self, bot: Bot, staff_chat_id: int, desk: StaffDesk, paging: Paging) -> None:
        self.bot = bot
        self.staff_chat_id = staff_chat_id
        self.desk = desk
        self.paging = paging

    def chat_for(self, recipient: str) -> int | None:
        if recipient == STAFF_CHAT:
            return self.staff_chat_id
        name = dm_name(recipient)
        return self.paging.user_id(name) if name else None

    async def send(self, recipient: str, message: StaffMessage) -> int:
        chat_id = self.chat_for(recipient)
        if chat_id is None:
            raise RecipientUnreachable(recipient)
        # An alert is short; a digest or a long follow-up may need more than one message, and
        # the buttons go on the last.
        parts = split_html(message.html)
        message_id = 0
        try:
            for index, part in enumerate(parts):
                markup = alert_keyboard(message) if index == len(parts) - 1 else None
                sent = await self.bot.send_message(chat_id, part, reply_markup=markup)
                message_id = sent.message_id
        except TelegramRetryAfter as exc:
            raise DeliveryDelayed(exc.retry_after) from None
        except TelegramForbiddenError:
            # They never pressed Start in a private chat with the bot, or blocked it.
            raise RecipientUnreachable(recipient) from None
        except TelegramNetworkError as exc:
            # No connection at all: nothing went out. Anything else (a timeout, a connection
            # reset while waiting for the answer) may come after Telegram posted it.
            if isinstance(exc.__cause__, ClientConnectorError):
                raise
            raise DeliveryUncertain(type(exc.__cause__).__name__) from None
        return message_id

    async def refresh(self, ref: str, bot: Bot) -> None:
        """Re-draw every alert message about a case (who acknowledged, who took it). Called
        from a handler, with its `bot`, whose requests retry on 429 and 5xx."""
        for recipient, message_id in await self.desk.store.sent_alert_messages(ref):
            chat_id = self.chat_for(recipient)
            if chat_id is None:
                continue
            rows = await self.desk.store.deliveries_for_message(recipient, message_id)
            message = await self.desk.render(rows)
            try:
                await bot.edit_message_text(
                    text=split_html(message.html)[-1],
                    chat_id=chat_id,
                    message_id=message_id,
                    reply_markup=alert_keyboard(message),
                )
            except TelegramBadRequest as exc:
                if "not modified" not in str(exc).lower():
                    log.warning("alert_edit_failed case=%s error=%s", ref, type(exc).__name__)
            except TelegramAPIError as exc:
                log.warning("alert_edit_failed case=%s error=%s", ref, type(exc).__name__)
