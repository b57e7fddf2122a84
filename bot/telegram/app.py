"""The Telegram bot: wires routers, middlewares and the alert outbox, then long-polls."""

from __future__ import annotations

import logging
from datetime import timedelta

from aiogram import Bot, Dispatcher
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.enums import ParseMode
from aiogram.exceptions import TelegramRetryAfter
from aiogram.types import (
    ErrorEvent,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    LinkPreviewOptions,
)

from bot.config import Settings
from bot.errors import ConfigError
from bot.escalation.desk import StaffDesk
from bot.escalation.outbox import DeliveryDelayed, OutboxWorker
from bot.runtime import open_services
from bot.storage.base import EscalationRow
from bot.telegram.callbacks import AckAlert
from bot.telegram.middlewares import InFlight, RetryRequests
from bot.telegram.routers import groups, reporter, staff

log = logging.getLogger("safeguard.telegram")

DRAIN_SECONDS = 10.0
# Telegram re-delivers an unconfirmed update within hours at most; a week is ample.
UPDATE_MEMORY = timedelta(days=7)


class TelegramStaffNotifier:
    """Posts alerts to the staff chat with an Acknowledge button."""

    def __init__(self, bot: Bot, chat_id: int, desk: StaffDesk, button_label: str) -> None:
        self.bot = bot
        self.chat_id = chat_id
        self.desk = desk
        self.button_label = button_label

    async def post_alert(self, escalation: EscalationRow) -> int:
        markup = InlineKeyboardMarkup(
            inline_keyboard=[
                [
                    InlineKeyboardButton(
                        text=self.button_label, callback_data=AckAlert(e=escalation.id).pack()
                    )
                ]
            ]
        )
        try:
            message = await self.bot.send_message(
                self.chat_id, await self.desk.alert_text(escalation), reply_markup=markup
            )
        except TelegramRetryAfter as exc:
            raise DeliveryDelayed(exc.retry_after) from None
        return message.message_id


def build_bot(settings: Settings) -> Bot:
    token = settings.telegram.token
    if token is None or not token.get_secret_value():
        raise ConfigError(
            "no Telegram token: set telegram.token or SAFEGUARD_TELEGRAM__TOKEN "
            "(`safeguard chat` needs none)"
        )
    session = AiohttpSession(api=TelegramAPIServer.from_base(settings.telegram.api_base))
    session.middleware(RetryRequests())
    return Bot(
        token.get_secret_value(),
        session=session,
        default=DefaultBotProperties(
            parse_mode=ParseMode.HTML,
            link_preview=LinkPreviewOptions(is_disabled=True),
        ),
    )


def build_dispatcher(settings: Settings, in_flight: InFlight) -> Dispatcher:
    dp = Dispatcher()
    dp.update.outer_middleware(in_flight)
    # Order matters: the staff chat first, then private chats, then everything else (leave).
    dp.include_router(staff.build_router(settings))
    dp.include_router(reporter.router)
    dp.include_router(groups.build_router(settings.staff.chat_id))

    @dp.errors()
    async def on_error(event: ErrorEvent) -> bool:
        # The exception's text may quote what the reporter wrote: log its class only.
        log.error("update_failed error=%s", type(event.exception).__name__)
        return True

    return dp


async def run_bot(settings: Settings) -> None:
    if settings.staff.chat_id is None:
        raise ConfigError("staff.chat_id is not set: alerts would have nowhere to go")
    bot = build_bot(settings)
    in_flight = InFlight()
    dp = build_dispatcher(settings, in_flight)
    worker: OutboxWorker | None = None

    def wake_worker() -> None:
        if worker is not None:
            worker.wake()

    async with open_services(settings, on_alert=wake_worker) as services:
        notifier = TelegramStaffNotifier(
            bot,
            settings.staff.chat_id,
            services.desk,
            services.content.wording.staff.acknowledge_button,
        )
        worker = OutboxWorker(services.store, notifier)

        async def on_startup() -> None:
            assert worker is not None
            await services.store.forget_old_updates(UPDATE_MEMORY)
            worker.start()
            log.info("bot_started staff_key=%s", services.crypto.staff_fingerprint)

        async def on_shutdown() -> None:
            await in_flight.drain(DRAIN_SECONDS)
            assert worker is not None
            await worker.stop()
            log.info("bot_stopped")

        dp.startup.register(on_startup)
        dp.shutdown.register(on_shutdown)
        await dp.start_polling(
            bot,
            polling_timeout=settings.telegram.polling_timeout_seconds,
            allowed_updates=dp.resolve_used_update_types(),
            service=services.reporting,
            desk=services.desk,
            content=services.content,
        )
