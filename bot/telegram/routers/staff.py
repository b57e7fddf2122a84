"""The staff chat: acknowledging alerts and replying to reporters.

Only `staff.members` may act, and only from the staff chat. Anyone else gets nothing useful,
and the refusal is logged (by event name, never by who).
"""

from __future__ import annotations

import html
import logging

from aiogram import Bot, F, Router
from aiogram.exceptions import TelegramAPIError
from aiogram.filters import Command, CommandObject
from aiogram.types import CallbackQuery, Message

from bot.config import Settings
from bot.dialogue.content import Content
from bot.errors import NotFoundError
from bot.escalation.desk import StaffDesk
from bot.reports.reference import normalise_reference
from bot.telegram.callbacks import AckAlert

log = logging.getLogger("safeguard.staff")


def build_router(settings: Settings) -> Router:
    router = Router(name="staff")
    staff_chat = settings.staff.chat_id
    members = frozenset(settings.staff.members)
    if staff_chat is None:
        return router  # no staff chat configured: nothing here can match
    router.message.filter(F.chat.id == staff_chat)
    router.callback_query.filter(F.message.chat.id == staff_chat)

    @router.callback_query(AckAlert.filter())
    async def acknowledge(
        query: CallbackQuery, callback_data: AckAlert, desk: StaffDesk, content: Content
    ) -> None:
        w = content.wording.staff
        if query.from_user.id not in members:
            log.warning("staff_action_refused action=acknowledge")
            await query.answer(w.not_staff, show_alert=True)
            return
        try:
            first, row = await desk.acknowledge(callback_data.e, by=query.from_user.first_name)
        except NotFoundError:
            await query.answer(w.unknown_button)
            return
        await query.answer(None if first else w.already_acknowledged)
        if first and query.message is not None:
            try:
                await query.bot.edit_message_text(  # type: ignore[union-attr]
                    text=await desk.alert_text(row),
                    chat_id=query.message.chat.id,
                    message_id=query.message.message_id,
                    reply_markup=None,
                )
            except TelegramAPIError as exc:
                log.warning("ack_edit_failed error=%s", type(exc).__name__)

    @router.message(Command("reply"))
    async def reply(
        message: Message, command: CommandObject, bot: Bot, desk: StaffDesk, content: Content
    ) -> None:
        w = content.wording.staff
        if message.from_user is None or message.from_user.id not in members:
            log.warning("staff_action_refused action=reply")
            return
        ref_text, _, body = (command.args or "").strip().partition(" ")
        ref = normalise_reference(ref_text)
        body = body.strip()
        if ref is None or not body:
            await message.reply(w.reply_usage)
            return
        try:
            address = await desk.reply_address(ref)
        except NotFoundError:
            await message.reply(w.case_not_found.format(ref=html.escape(ref)))
            return
        if address is None:
            await message.reply(w.reply_not_allowed.format(ref=ref))
            return
        try:
            await bot.send_message(address, w.to_reporter.format(ref=ref, text=html.escape(body)))
        except TelegramAPIError as exc:
            log.warning("staff_reply_failed case=%s error=%s", ref, type(exc).__name__)
            await message.reply(w.reply_failed.format(ref=ref))
            return
        log.info("staff_reply_sent case=%s", ref)
        await message.reply(w.reply_sent.format(ref=ref))

    @router.message()
    async def staff_chatter(message: Message) -> None:
        """Staff talking among themselves: not for the bot."""

    @router.callback_query()
    async def unknown_staff_button(query: CallbackQuery, content: Content) -> None:
        await query.answer(content.wording.staff.unknown_button)

    return router
