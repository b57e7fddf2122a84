"""Sending a turn's reply to a reporter when Telegram fails."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from aiogram.exceptions import TelegramForbiddenError, TelegramServerError
from aiogram.methods import SendMessage

import bot.telegram.messenger as messenger_module
from bot.dialogue.engine import Reply
from bot.telegram.messenger import TelegramMessenger

REPORTER = 4242


class FlakyBot:
    """Answers sendMessage with the given errors first, then succeeds."""

    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.calls = 0

    async def send_message(self, chat_id: int, text: str, **_: Any) -> SimpleNamespace:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return SimpleNamespace(message_id=100 + self.calls)


def server_error() -> TelegramServerError:
    return TelegramServerError(SendMessage(chat_id=REPORTER, text="x"), "Internal Server Error")


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr(messenger_module, "asyncio", SimpleNamespace(sleep=sleep))
    return waits


async def test_the_999_line_keeps_trying_through_an_outage(no_waiting: list[float]) -> None:
    # Given Telegram failing three times (after the request's own retries)
    bot = FlakyBot(server_error(), server_error(), server_error())
    messenger = TelegramMessenger(bot, REPORTER, None)  # type: ignore[arg-type]
    # When the urgent reply after an alarm is sent
    sent = await messenger.send(Reply("call 999", urgent=True))
    # Then it keeps trying, backing off, until Telegram takes it
    assert sent == [104] and bot.calls == 4
    assert no_waiting == [2.0, 4.0, 8.0]


async def test_an_ordinary_reply_gives_up_and_waits_for_the_next_message() -> None:
    bot = FlakyBot(server_error())
    messenger = TelegramMessenger(bot, REPORTER, None)  # type: ignore[arg-type]
    assert await messenger.send(Reply("Who is this about?")) == []
    assert bot.calls == 1


async def test_a_reporter_who_blocked_the_bot_is_not_retried() -> None:
    blocked = TelegramForbiddenError(SendMessage(chat_id=REPORTER, text="x"), "bot was blocked")
    bot = FlakyBot(blocked)
    messenger = TelegramMessenger(bot, REPORTER, None)  # type: ignore[arg-type]
    assert await messenger.send(Reply("call 999", urgent=True)) == []
    assert bot.calls == 1


async def test_patience_has_an_end(no_waiting: list[float]) -> None:
    bot = FlakyBot(*[server_error() for _ in range(200)])
    messenger = TelegramMessenger(bot, REPORTER, None)  # type: ignore[arg-type]
    assert await messenger.send(Reply("call 999", urgent=True)) == []
    assert sum(no_waiting) >= messenger_module.URGENT_RETRY_FOR_SECONDS
    assert bot.calls < 60
