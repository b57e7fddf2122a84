"""Builds the services both front ends share (Telegram and the terminal) from the settings."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from bot.config import Settings
from bot.crypto import BotCrypto, StaffKey
from bot.dialogue.content import Content
from bot.dialogue.flood import FloodGuard
from bot.dialogue.service import ReportingService
from bot.escalation.desk import StaffDesk
from bot.escalation.paging import Paging
from bot.escalation.rota import Rota
from bot.storage.lock import data_dir_lock
from bot.storage.sqlite import SqliteStore
from nlu.pipeline import build_nlu

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure_logging(level: str) -> None:
    """Our loggers carry event names and case ids only. aiogram's INFO lines name the bot's own
    account and update ids; its error lines can quote request data, so it is kept to WARNING and
    handler errors go through our own error handler instead."""
    logging.basicConfig(level=level, format=LOG_FORMAT)
    logging.getLogger("aiogram").setLevel(logging.WARNING)
    logging.getLogger("aiosqlite").setLevel(logging.WARNING)


@dataclass
class Services:
    settings: Settings
    content: Content
    store: SqliteStore
    crypto: BotCrypto
    reporting: ReportingService
    desk: StaffDesk
    paging: Paging


@asynccontextmanager
async def open_services(
    settings: Settings,
    on_alert: Callable[[], None] | None = None,
    staff_key: StaffKey | None = None,
) -> AsyncIterator[Services]:
    content = Content.load(settings.dialogue.content_dir, settings.dialogue.language)
    crypto = BotCrypto.load(settings.storage.data_dir)
    paging = Paging(settings.escalation, Rota(settings.rota), settings.staff.members, crypto)
    nlu = build_nlu(settings.nlu.engine, settings.nlu.rasa_url)
    with data_dir_lock(settings.storage.data_dir, "starting the bot"):
        # Opening with the secrets refuses a bot_secrets.json this database was not used with.
        async with SqliteStore(settings.storage.data_dir, secrets=crypto) as store:
            try:
                yield Services(
                    settings=settings,
                    content=content,
                    store=store,
                    crypto=crypto,
                    reporting=ReportingService(
                        content,
                        store,
                        crypto,
                        nlu,
                        paging,
                        on_alert=on_alert,
                        flood=FloodGuard(settings.flood),
                    ),
                    desk=StaffDesk(store, crypto, content, paging, staff_key),
                    paging=paging,
                )
            finally:
                close = getattr(nlu.model, "close", None)  # the Rasa client holds an HTTP session
                if close is not None:
                    await close()
