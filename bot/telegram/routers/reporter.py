"""Private chats: everything a reporter sends, handed to the transport-free dialogue service."""

from __future__ import annotations

from aiogram import Bot, F, Router
from aiogram.filters import Command, CommandObject
from aiogram.types import CallbackQuery, Message, Update

from bot.dialogue.engine import Inbound
from bot.dialogue.service import Origin, ReportingService
from bot.telegram.callbacks import ReporterAction, answer_query
from bot.telegram.messenger import TelegramMessenger
from bot.telegram.polling import UPDATE_SAVED

router = Router(name="reporter")
router.message.filter(F.chat.type == "private")
router.edited_message.filter(F.chat.type == "private")
router.callback_query.filter(F.message.chat.type == "private")


async def _handle(
    service: ReportingService, bot: Bot, message: Message, update: Update, inbound: Inbound
) -> None:
    if message.from_user is None:
        return
    origin = Origin(
        reporter_id=message.from_user.id,
        update_id=update.update_id,
        message_id=message.message_id,
        reply_address=message.chat.id,
        on_saved=UPDATE_SAVED.get(),
    )
    messenger = TelegramMessenger(bot, message.chat.id, message.message_id)
    await service.handle(origin, inbound, messenger)


@router.message(Command("start"))
async def start(
    message: Message, event_update: Update, bot: Bot, service: ReportingService
) -> None:
    await _handle(service, bot, message, event_update, Inbound("start"))


@router.message(Command("help"))
async def help_(
    message: Message, event_update: Update, bot: Bot, service: ReportingService
) -> None:
    await _handle(service, bot, message, event_update, Inbound("help"))


@router.message(Command("exit", "leave", "stop"))
async def exit_(
    message: Message, event_update: Update, bot: Bot, service: ReportingService
) -> None:
    await _handle(service, bot, message, event_update, Inbound("exit"))


@router.message(Command("followup"))
async def followup(
    message: Message,
    command: CommandObject,
    event_update: Update,
    bot: Bot,
    service: ReportingService,
) -> None:
    """/followup REF: add to a report sent earlier, or read the team's replies again."""
    inbound = Inbound("followup", text=command.args or "")
    await _handle(service, bot, message, event_update, inbound)


@router.message(F.text)
async def text(message: Message, event_update: Update, bot: Bot, service: ReportingService) -> None:
    await _handle(service, bot, message, event_update, Inbound("text", text=message.text or ""))


@router.message()
async def anything_else(
    message: Message, event_update: Update, bot: Bot, service: ReportingService
) -> None:
    """Photos, videos, voice, files, stickers, locations...: never kept, never forwarded.

    A caption is words the reporter chose to send, so it is handled like typed text after the
    media itself has been removed.
    """
    # aiogram's ContentType is a str-valued Enum; its value is Telegram's field name ("photo").
    kind = str(getattr(message.content_type, "value", message.content_type) or "other")
    inbound = Inbound("media", media_kind=kind, text=message.caption or "")
    await _handle(service, bot, message, event_update, inbound)


@router.edited_message(F.text)
async def edited(
    message: Message, event_update: Update, bot: Bot, service: ReportingService
) -> None:
    await _handle(service, bot, message, event_update, Inbound("edited", text=message.text or ""))


@router.callback_query(ReporterAction.filter())
async def button(
    query: CallbackQuery,
    callback_data: ReporterAction,
    event_update: Update,
    bot: Bot,
    service: ReportingService,
) -> None:
    await answer_query(query)
    if query.message is None:
        return
    chat_id = query.message.chat.id
    origin = Origin(
        reporter_id=query.from_user.id,
        update_id=event_update.update_id,
        reply_address=chat_id,
        on_saved=UPDATE_SAVED.get(),
    )
    inbound = Inbound(
        "button",
        action=callback_data.a,
        step=callback_data.s,
        value=callback_data.v,
        turn=callback_data.t,
    )
    await service.handle(origin, inbound, TelegramMessenger(bot, chat_id, None))


@router.callback_query()
async def unknown_button(query: CallbackQuery, service: ReportingService) -> None:
    """Forged or foreign callback data: refuse politely, change nothing."""
    await answer_query(query, service.content.wording.staff.unknown_button)
