"""The bot's aiogram session, over real HTTP to the Bot API emulator."""

from __future__ import annotations

import gc
import weakref

from aiogram.methods import Response
from aiogram.types import User

from bot.config import Settings
from bot.telegram.app import build_bot
from tests.emulator import DEFAULT_TOKEN, BotApiEmulator


async def test_parsed_answer_types_survive_garbage_collection_between_requests() -> None:
    # Given a bot built as `safeguard run` builds it, which has asked Telegram one thing
    async with BotApiEmulator() as emulator:
        settings = Settings(telegram={"token": DEFAULT_TOKEN, "api_base": emulator.base_url})
        bot = build_bot(settings)
        try:
            me = await bot.get_me()
            answer_type = weakref.ref(Response[User])

            # When the garbage collector runs between two requests
            gc.collect()

            # Then the next request reuses the parsed type instead of rebuilding it
            # (a rebuild costs milliseconds of CPU on every few requests under load)
            assert answer_type() is not None
            assert Response[User] is answer_type()
            assert (await bot.get_me()).id == me.id
        finally:
            await bot.session.close()
