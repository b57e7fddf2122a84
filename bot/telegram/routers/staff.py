"""Staff: alert buttons and the commands that work a case, in the staff chat or in a staff
member's private chat with the bot.

Only `staff.members` may act. Anyone else gets nothing useful and the attempt is recorded
(by event name, never by who). In a private chat a non-member's "/queue" is just text for the
reporter flow. A button is trusted only if it names an alert the bot put on that message.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from aiogram import Bot, F, Router
from aiogram.dispatcher.event.bases import SkipHandler
from aiogram.filters import Command, CommandObject
from aiogram.types import CallbackQuery, Message, User

from bot.config import Settings
from bot.dialogue.content import Content, StaffWording
from bot.errors import NotFoundError
from bot.escalation.desk import ActionResult, StaffDesk
from bot.escalation.paging import Paging, utcnow
from bot.escalation.policy import STAFF_CHAT, dm
from bot.reports.reference import normalise_reference
from bot.telegram.callbacks import AlertAction
from bot.telegram.messenger import split_html
from bot.telegram.notifier import TelegramStaffNotifier

log = logging.getLogger("safeguard.staff")

STAFF_COMMANDS = (
    "queue",
    "case",
    "reply",
    "note",
    "close",
    "reopen",
    "oncall",
    "handover",
    "staff",
)


def build_router(settings: Settings) -> Router:
    router = Router(name="staff")
    staff_chat = settings.staff.chat_id
    if staff_chat is None:
        return router  # no staff chat configured: nothing here can match
    in_staff_chat = F.chat.id == staff_chat
    private = F.chat.type == "private"
    router.callback_query.filter(
        (F.message.chat.id == staff_chat) | (F.message.chat.type == "private")
    )

    def staff_name(user: User | None, paging: Paging) -> str | None:
        if user is None or not paging.is_member(user.id):
            return None
        return paging.staff_name(user.id, user.first_name)

    async def reply_html(message: Message, text: str) -> None:
        for part in split_html(text):
            await message.answer(part)

    def staff_command(
        *names: str, private_too: bool = True
    ) -> Callable[[Callable[..., Awaitable[None]]], Callable[..., Awaitable[None]]]:
        """Register a staff command in the staff chat and in private chats; refuse strangers."""

        def register(handler: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
            async def guarded(
                message: Message,
                command: CommandObject,
                desk: StaffDesk,
                paging: Paging,
                content: Content,
                bot: Bot,
                notifier: TelegramStaffNotifier,
            ) -> None:
                name = staff_name(message.from_user, paging)
                if name is None:
                    await desk.refused(command.command)
                    if message.chat.type == "private":
                        raise SkipHandler  # just words for the reporter flow
                    return
                w = content.wording.staff
                try:
                    await handler(
                        message,
                        (command.args or "").strip(),
                        name,
                        desk,
                        paging,
                        w,
                        bot,
                        notifier,
                    )
                except NotFoundError:
                    ref = normalise_reference((command.args or "").split(" ", 1)[0]) or "?"
                    await message.reply(w.case_not_found.format(ref=html.escape(ref)))

            where = (in_staff_chat | private) if private_too else in_staff_chat
            router.message.register(guarded, Command(*names), where)
            return handler

        return register

    # /help in a private chat is the reporter's help; staff use /staff there.
    @staff_command("staff")
    @staff_command("help", private_too=False)
    async def staff_help(
        message: Message,
        args: str,
        name: str,
        desk: StaffDesk,
        paging: Paging,
        w: StaffWording,
        *_: object,
    ) -> None:
        await message.answer(w.staff_help.format(outcomes=", ".join(w.outcomes)))

    @staff_command("queue")
    async def queue(
        message: Message,
        args: str,
        name: str,
        desk: StaffDesk,
        paging: Paging,
        w: StaffWording,
        *_: object,
    ) -> None:
        await reply_html(message, await desk.queue_text())

    @staff_command("case")
    async def case(
        message: Message,
        args: str,
        name: str,
        desk: StaffDesk,
        paging: Paging,
        w: StaffWording,
        *_: object,
    ) -> None:
        ref = normalise_reference(args.split(" ", 1)[0]) if args else None
        if ref is None:
            await message.reply(w.case_usage)
            return
        await reply_html(message, await desk.case_text(ref))

    @staff_command("reply")
    async def reply(
        message: Message,
        args: str,
        name: str,
        desk: StaffDesk,
        paging: Paging,
        w: StaffWording,
        bot: Bot,
        *_: object,
    ) -> None:
        ref, body = _ref_and_text(args)
        if ref is None or not body:
            await message.reply(w.reply_usage)
            return
        address = await desk.reply_address(ref)
        if address is None:
            await message.reply(w.reply_not_allowed.format(ref=ref))
            return
        try:
            for part in split_html(w.to_reporter.format(ref=ref, text=html.escape(body))):
                await bot.send_message(address, part)
        except Exception as exc:  # any transport failure: tell the staff member, log the class
            log.warning("staff_reply_failed case=%s error=%s", ref, type(exc).__name__)
            await message.reply(w.reply_failed.format(ref=ref))
            return
        await desk.record_reply(ref, name, body)
        await message.reply(w.reply_sent.format(ref=ref))

    @staff_command("note")
    async def note(
        message: Message,
        args: str,
        name: str,
        desk: StaffDesk,
        paging: Paging,
        w: StaffWording,
        *_: object,
    ) -> None:
        ref, body = _ref_and_text(args)
        if ref is None or not body:
            await message.reply(w.note_usage)
            return
        await desk.note(ref, name, body)
        await message.reply(w.note_saved.format(ref=ref))

    @staff_command("close")
    async def close(
        message: Message,
        args: str,
        name: str,
        desk: StaffDesk,
        paging: Paging,
        w: StaffWording,
        bot: Bot,
        notifier: TelegramStaffNotifier,
    ) -> None:
        ref, outcome = _ref_and_text(args)
        outcome = outcome.strip().lower().replace(" ", "_")
        if ref is None or outcome not in w.outcomes:
            await message.reply(w.close_usage.format(outcomes=", ".join(w.outcomes)))
            return
        result = await desk.close(ref, name, outcome)
        if not result.done:
            await message.reply(w.already_closed.format(ref=ref))
            return
        await message.reply(w.closed.format(ref=ref, outcome=html.escape(w.outcomes[outcome])))
        await notifier.refresh(ref, bot)

    @staff_command("reopen")
    async def reopen(
        message: Message,
        args: str,
        name: str,
        desk: StaffDesk,
        paging: Paging,
        w: StaffWording,
        bot: Bot,
        notifier: TelegramStaffNotifier,
    ) -> None:
        ref = normalise_reference(args.split(" ", 1)[0]) if args else None
        if ref is None:
            await message.reply(w.reopen_usage)
            return
        result = await desk.reopen(ref, name)
        await message.reply((w.reopened if result.done else w.not_closed).format(ref=ref))
        if result.done:
            await notifier.refresh(ref, bot)

    @staff_command("oncall")
    async def oncall(
        message: Message,
        args: str,
        name: str,
        desk: StaffDesk,
        paging: Paging,
        w: StaffWording,
        *_: object,
    ) -> None:
        if paging.user_id(name) is None:
            await message.reply(w.not_in_rota.format(name=html.escape(name)))
            return
        await _take_pager(message, name, name, desk, paging, w)

    @staff_command("handover")
    async def handover(
        message: Message,
        args: str,
        name: str,
        desk: StaffDesk,
        paging: Paging,
        w: StaffWording,
        *_: object,
    ) -> None:
        target = paging.rota.canonical_name(args) if args else None
        if target is None or paging.user_id(target) is None:
            names = ", ".join(paging.team()) or "-"
            await message.reply(w.handover_usage.format(names=html.escape(names)))
            return
        await _take_pager(message, target, name, desk, paging, w)

    @router.callback_query(AlertAction.filter())
    async def alert_button(
        query: CallbackQuery,
        callback_data: AlertAction,
        desk: StaffDesk,
        paging: Paging,
        content: Content,
        bot: Bot,
        notifier: TelegramStaffNotifier,
    ) -> None:
        w = content.wording.staff
        name = staff_name(query.from_user, paging)
        if name is None:
            await desk.refused(f"alert_{callback_data.a}")
            await query.answer(w.not_staff, show_alert=True)
            return
        message = query.message
        if message is None or callback_data.a not in ("ack", "take"):
            await query.answer(w.unknown_button)
            return
        recipient = STAFF_CHAT if message.chat.id == staff_chat else dm(name)
        if not await desk.store.alert_shown_in(callback_data.e, recipient, message.message_id):
            log.warning("alert_button_forged action=%s", callback_data.a)
            await query.answer(w.unknown_button)
            return
        ref = (await desk.store.get_escalation(callback_data.e)).case_ref
        result: ActionResult
        if callback_data.a == "ack":
            result = await desk.acknowledge(callback_data.e, by=name)
            answer = None if result.done else w.already_acknowledged.format(name=result.by)
        else:
            result = await desk.take(ref, by=name)
            answer = (
                w.you_took.format(ref=ref)
                if result.done
                else w.already_taken.format(name=result.by)
            )
        await query.answer(answer)
        if result.done:
            await notifier.refresh(ref, bot)
        if result.acknowledged:
            await _tell_reporter_seen(bot, desk, content, ref)

    @router.message(in_staff_chat)
    async def staff_chatter(message: Message) -> None:
        """Staff talking among themselves: not for the bot."""

    @router.callback_query(F.message.chat.id == staff_chat)
    async def unknown_staff_button(query: CallbackQuery, content: Content) -> None:
        await query.answer(content.wording.staff.unknown_button)

    return router


def _ref_and_text(args: str) -> tuple[str | None, str]:
    ref_text, _, body = args.strip().partition(" ")
    return normalise_reference(ref_text), body.strip()


async def _take_pager(
    message: Message, target: str, by: str, desk: StaffDesk, paging: Paging, w: StaffWording
) -> None:
    until: datetime = await desk.take_pager(target, by)
    on_call = await paging.on_call(desk.store, utcnow())
    await message.answer(
        w.oncall_taken.format(
            name=html.escape(target),
            until=desk.local_time(until.isoformat()),
            backup=html.escape(on_call.backup or "-"),
        )
    )


async def _tell_reporter_seen(bot: Bot, desk: StaffDesk, content: Content, ref: str) -> None:
    """If they agreed to replies, the reporter hears that a person has seen their message."""
    address = await desk.reply_address(ref)
    if address is None:
        return
    try:
        await bot.send_message(address, content.wording.seen_by_team.format(ref=ref))
    except Exception as exc:  # the reporter may have blocked the bot; staff already have it
        log.warning("seen_notice_failed case=%s error=%s", ref, type(exc).__name__)
