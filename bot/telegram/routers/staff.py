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
from dataclasses import dataclass
from datetime import datetime

from aiogram import Bot, F, Router
from aiogram.dispatcher.event.bases import SkipHandler
from aiogram.filters import Command, CommandObject
from aiogram.types import CallbackQuery, Message, User

from bot.config import Settings
from bot.dialogue.content import Content, StaffWording
from bot.dialogue.service import ReportingService
from bot.errors import NotFoundError
from bot.escalation.desk import ActionResult, StaffDesk
from bot.escalation.paging import Paging, utcnow
from bot.escalation.policy import STAFF_CHAT, dm
from bot.reports.reference import normalise_reference
from bot.telegram.callbacks import AlertAction, answer_query
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


@dataclass(frozen=True)
class StaffTurn:
    """One staff command: who sent it (by rota name), its arguments, and the services."""

    message: Message
    args: str
    name: str
    desk: StaffDesk
    paging: Paging
    content: Content
    bot: Bot
    notifier: TelegramStaffNotifier
    service: ReportingService

    @property
    def w(self) -> StaffWording:
        return self.content.wording.staff

    async def answer_html(self, text: str) -> None:
        for part in split_html(text):
            await self.message.answer(part)


StaffHandler = Callable[[StaffTurn], Awaitable[None]]


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

    def staff_command(
        *names: str, private_too: bool = True
    ) -> Callable[[StaffHandler], StaffHandler]:
        """Register a staff command in the staff chat and in private chats; refuse strangers."""

        def register(handler: StaffHandler) -> StaffHandler:
            async def guarded(
                message: Message,
                command: CommandObject,
                desk: StaffDesk,
                paging: Paging,
                content: Content,
                bot: Bot,
                notifier: TelegramStaffNotifier,
                service: ReportingService,
            ) -> None:
                name = staff_name(message.from_user, paging)
                if name is None:
                    await desk.refused(command.command)
                    if message.chat.type == "private":
                        raise SkipHandler  # just words for the reporter flow
                    return
                w = content.wording.staff
                args = (command.args or "").strip()
                ctx = StaffTurn(message, args, name, desk, paging, content, bot, notifier, service)
                try:
                    await handler(ctx)
                except NotFoundError:
                    ref = normalise_reference(args.split(" ", 1)[0]) or "?"
                    await message.reply(w.case_not_found.format(ref=html.escape(ref)))

            where = (in_staff_chat | private) if private_too else in_staff_chat
            router.message.register(guarded, Command(*names), where)
            return handler

        return register

    # /help in a private chat is the reporter's help; staff use /staff there.
    @staff_command("staff")
    @staff_command("help", private_too=False)
    async def staff_help(t: StaffTurn) -> None:
        await t.message.answer(t.w.staff_help.format(outcomes=", ".join(t.w.outcomes)))

    @staff_command("queue")
    async def queue(t: StaffTurn) -> None:
        await t.answer_html(await t.desk.queue_text())

    @staff_command("case")
    async def case(t: StaffTurn) -> None:
        ref = normalise_reference(t.args.split(" ", 1)[0]) if t.args else None
        if ref is None:
            await t.message.reply(t.w.case_usage)
            return
        await t.answer_html(await t.desk.case_text(ref, t.name))

    @staff_command("reply")
    async def reply(t: StaffTurn) -> None:
        ref, body = _ref_and_text(t.args)
        if ref is None or not body:
            await t.message.reply(t.w.reply_usage)
            return
        address = await t.desk.reply_address(ref)
        if address is None:
            await t.message.reply(t.w.reply_not_allowed.format(ref=ref))
            return
        sent: list[int] = []
        try:
            for part in split_html(t.w.to_reporter.format(ref=ref, text=html.escape(body))):
                sent.append((await t.bot.send_message(address, part)).message_id)
        except Exception as exc:  # any transport failure: tell the staff member, log the class
            log.warning("staff_reply_failed case=%s error=%s", ref, type(exc).__name__)
            await t.message.reply(t.w.reply_failed.format(ref=ref))
            return
        finally:
            await t.service.track_outbound(address, ref, sent)
        await t.desk.record_reply(ref, t.name, body)
        await t.message.reply(t.w.reply_sent.format(ref=ref))

    @staff_command("note")
    async def note(t: StaffTurn) -> None:
        ref, body = _ref_and_text(t.args)
        if ref is None or not body:
            await t.message.reply(t.w.note_usage)
            return
        await t.desk.note(ref, t.name, body)
        await t.message.reply(t.w.note_saved.format(ref=ref))

    @staff_command("close")
    async def close(t: StaffTurn) -> None:
        ref, outcome = _ref_and_text(t.args)
        outcome = outcome.strip().lower().replace(" ", "_")
        if ref is None or outcome not in t.w.outcomes:
            await t.message.reply(t.w.close_usage.format(outcomes=", ".join(t.w.outcomes)))
            return
        result = await t.desk.close(ref, t.name, outcome)
        if not result.done:
            await t.message.reply(t.w.already_closed.format(ref=ref))
            return
        outcome_label = html.escape(t.w.outcomes[outcome])
        await t.message.reply(t.w.closed.format(ref=ref, outcome=outcome_label))
        await t.notifier.refresh(ref, t.bot)

    @staff_command("reopen")
    async def reopen(t: StaffTurn) -> None:
        ref = normalise_reference(t.args.split(" ", 1)[0]) if t.args else None
        if ref is None:
            await t.message.reply(t.w.reopen_usage)
            return
        result = await t.desk.reopen(ref, t.name)
        await t.message.reply((t.w.reopened if result.done else t.w.not_closed).format(ref=ref))
        if result.done:
            await t.notifier.refresh(ref, t.bot)

    @staff_command("oncall")
    async def oncall(t: StaffTurn) -> None:
        if t.paging.user_id(t.name) is None:
            await t.message.reply(t.w.not_in_rota.format(name=html.escape(t.name)))
            return
        await _take_pager(t, t.name)

    @staff_command("handover")
    async def handover(t: StaffTurn) -> None:
        target = t.paging.rota.canonical_name(t.args) if t.args else None
        if target is None or t.paging.user_id(target) is None:
            names = ", ".join(t.paging.team()) or "-"
            await t.message.reply(t.w.handover_usage.format(names=html.escape(names)))
            return
        await _take_pager(t, target)

    @router.callback_query(AlertAction.filter())
    async def alert_button(
        query: CallbackQuery,
        callback_data: AlertAction,
        desk: StaffDesk,
        paging: Paging,
        content: Content,
        bot: Bot,
        notifier: TelegramStaffNotifier,
        service: ReportingService,
    ) -> None:
        w = content.wording.staff
        name = staff_name(query.from_user, paging)
        if name is None:
            # The action comes from the button's data, which a stranger can forge: record only
            # the ones that exist, never their free text.
            action = callback_data.a if callback_data.a in ("ack", "take") else "other"
            await desk.refused(f"alert_{action}")
            await answer_query(query, w.not_staff, show_alert=True)
            return
        message = query.message
        if message is None or callback_data.a not in ("ack", "take"):
            await answer_query(query, w.unknown_button)
            return
        recipient = STAFF_CHAT if message.chat.id == staff_chat else dm(name)
        if not await desk.store.alert_shown_in(callback_data.e, recipient, message.message_id):
            log.warning("alert_button_forged action=%s", callback_data.a)
            await answer_query(query, w.unknown_button)
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
        await answer_query(query, answer)
        if result.done:
            await notifier.refresh(ref, bot)
        if result.acknowledged:
            await _tell_reporter_seen(bot, desk, service, ref)

    @router.message(in_staff_chat)
    async def staff_chatter(message: Message) -> None:
        """Staff talking among themselves: not for the bot."""

    @router.callback_query(F.message.chat.id == staff_chat)
    async def unknown_staff_button(query: CallbackQuery, content: Content) -> None:
        await answer_query(query, content.wording.staff.unknown_button)

    return router


def _ref_and_text(args: str) -> tuple[str | None, str]:
    ref_text, _, body = args.strip().partition(" ")
    return normalise_reference(ref_text), body.strip()


async def _take_pager(t: StaffTurn, target: str) -> None:
    until: datetime = await t.desk.take_pager(target, t.name)
    on_call = await t.paging.on_call(t.desk.store, utcnow())
    await t.message.answer(
        t.w.oncall_taken.format(
            name=html.escape(target),
            until=t.desk.local_time(until.isoformat()),
            backup=html.escape(on_call.backup or "-"),
        )
    )


async def _tell_reporter_seen(
    bot: Bot, desk: StaffDesk, service: ReportingService, ref: str
) -> None:
    """If they agreed to replies, the reporter hears that a person has seen their message."""
    address = await desk.reply_address(ref)
    if address is None:
        return
    try:
        sent = await bot.send_message(address, service.content.wording.seen_by_team.format(ref=ref))
    except Exception as exc:  # the reporter may have blocked the bot; staff already have it
        log.warning("seen_notice_failed case=%s error=%s", ref, type(exc).__name__)
        return
    await service.track_outbound(address, ref, [sent.message_id])
