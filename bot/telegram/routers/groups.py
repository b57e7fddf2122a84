"""Any group or channel other than the staff chat: the bot does not talk there, it leaves."""

from __future__ import annotations

import logging

from aiogram import Bot, F, Router
from aiogram.exceptions import TelegramAPIError
from aiogram.types import ChatMemberUpdated, Message

log = logging.getLogger("safeguard.telegram")


async def _leave(bot: Bot, chat_id: int) -> None:
    try:
        await bot.leave_chat(chat_id)
        log.info("left_unknown_group")
    except TelegramAPIError as exc:
        log.warning("leave_failed error=%s", type(exc).__name__)


def build_router(staff_chat_id: int | None) -> Router:
    router = Router(name="groups")
    elsewhere = (F.chat.type != "private") & (F.chat.id != staff_chat_id)

    @router.my_chat_member(elsewhere)
    async def added_somewhere(update: ChatMemberUpdated, bot: Bot) -> None:
        if update.new_chat_member.status in ("member", "administrator", "restricted"):
            await _leave(bot, update.chat.id)

    @router.message(elsewhere)
    @router.channel_post(elsewhere)
    async def spoken_to_elsewhere(message: Message, bot: Bot) -> None:
        await _leave(bot, message.chat.id)

    return router
