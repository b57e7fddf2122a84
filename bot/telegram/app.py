"""The Telegram bot: wires routers, middlewares, the delivery worker and the health endpoint,
then long-polls."""

from __future__ import annotations

import gc
import logging
from datetime import timedelta

from aiogram import Bot, Dispatcher
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.enums import ParseMode
from aiogram.types import ErrorEvent, LinkPreviewOptions

from bot.config import Settings
from bot.crypto import StaffKey
from bot.errors import ConfigError
from bot.escalation.health import HealthServer
from bot.escalation.outbox import DeliveryWorker
from bot.runtime import open_services
from bot.storage.retention import RetentionWorker
from bot.telegram.limits import LimitRequests, OutboundLimiter, Priority
from bot.telegram.middlewares import KeepResponseTypes, RetryRequests
from bot.telegram.notifier import TelegramStaffNotifier
from bot.telegram.polling import DurablePoller
from bot.telegram.routers import groups, reporter, staff

log = logging.getLogger("safeguard.telegram")

DRAIN_SECONDS = 10.0
# Telegram re-delivers an unconfirmed update within hours at most; a week is ample.
UPDATE_MEMORY = timedelta(days=7)


def build_bot(
    settings: Settings,
    limiter: OutboundLimiter | None = None,
    *,
    for_alerts: bool = False,
) -> Bot:
    """The bot for replies and staff commands, or (`for_alerts`) the delivery worker's: it
    goes first through the shared limiter and does not retry, as the worker retries per
    recipient itself."""
    token = settings.telegram.token
    if token is None or not token.get_secret_value():
        raise ConfigError(
            "no Telegram token: set telegram.token or SAFEGUARD_TELEGRAM__TOKEN "
            "(`safeguard chat` needs none)"
        )
    session = AiohttpSession(
        api=TelegramAPIServer.from_base(settings.telegram.api_base),
        timeout=settings.telegram.request_timeout_seconds,
    )
    session.middleware(KeepResponseTypes())
    if not for_alerts:
        session.middleware(RetryRequests())
    if limiter is not None:  # inside the retries, so every attempt waits for a slot
        priority = Priority.STAFF_ALERT if for_alerts else Priority.ORDINARY
        session.middleware(LimitRequests(limiter, priority))
    return Bot(
        token.get_secret_value(),
        session=session,
        default=DefaultBotProperties(
            parse_mode=ParseMode.HTML,
            link_preview=LinkPreviewOptions(is_disabled=True),
        ),
    )


def build_dispatcher(settings: Settings) -> Dispatcher:
    dp = Dispatcher()
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


async def run_bot(settings: Settings, staff_key: StaffKey | None = None) -> None:
    if settings.staff.chat_id is None:
        raise ConfigError("staff.chat_id is not set: alerts would have nowhere to go")
    limiter = OutboundLimiter(
        per_second=settings.telegram.messages_per_second,
        pace_private_chats=settings.telegram.pace_private_chats,
    )
    bot = build_bot(settings, limiter)
    alert_bot = build_bot(settings, limiter, for_alerts=True)
    dp = build_dispatcher(settings)
    worker: DeliveryWorker | None = None

    def wake_worker() -> None:
        if worker is not None:
            worker.wake()

    async with open_services(settings, on_alert=wake_worker, staff_key=staff_key) as services:
        notifier = TelegramStaffNotifier(
            alert_bot, settings.staff.chat_id, services.desk, services.paging
        )
        worker = DeliveryWorker(
            services.store,
            services.desk,
            services.paging,
            notifier,
            staff_chat_per_minute=settings.escalation.staff_chat_per_minute,
            digest_time=settings.escalation.digest_time,
        )
        health = HealthServer(services.store, settings.health)
        purger = RetentionWorker(services.store, settings.retention, settings.storage.data_dir)

        async def on_startup() -> None:
            assert worker is not None
            await services.store.forget_old_updates(UPDATE_MEMORY)
            await health.start()  # first: if its port is taken, nothing else has started
            worker.start()
            purger.start()
            # Everything loaded so far (aiogram, the NLU model, the wording) lives as long as
            # the process: keep it out of the collector's full passes, which otherwise pause
            # the bot for 150-300 ms each under load.
            gc.collect()
            gc.freeze()
            log.info(
                "bot_started staff_keys=%d generation=%d unlocked=%s",
                len(services.crypto.recipients),
                services.crypto.generation,
                staff_key is not None,
            )

        async def on_shutdown() -> None:
            assert worker is not None
            await purger.stop()
            await worker.stop()
            await health.stop()
            await alert_bot.session.close()
            log.info("bot_stopped")

        dp.startup.register(on_startup)
        dp.shutdown.register(on_shutdown)
        poller = DurablePoller(
            dp,
            bot,
            settings.telegram.polling_timeout_seconds,
            dp.resolve_used_update_types(),
            service=services.reporting,
            desk=services.desk,
            paging=services.paging,
            content=services.content,
            notifier=notifier,
        )
        try:
            await poller.run(DRAIN_SECONDS)
        finally:
            await bot.session.close()
