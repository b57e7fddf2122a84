"""A local Telegram Bot API emulator for end-to-end tests of the bot.

Start it, point the bot at ``emulator.base_url`` (aiogram:
``TelegramAPIServer.from_base(emulator.base_url)``), then play users::

    async with BotApiEmulator() as emulator:
        alice = emulator.user(1001, "Alice")
        await alice.send_text("/start")
        reply = await alice.wait_for_bot_message(contains="Welcome")
        emulator.assert_no_violations()
"""

from .actors import SimGroup, SimUser, message_text
from .html import HtmlParseError, ParsedText, parse_html, utf16_len
from .server import (
    DEFAULT_TOKEN,
    EMULATOR_ONLY_KEYS,
    NO_ANSWER,
    BotApiEmulator,
    ChatState,
    RecordedRequest,
    StoredFile,
    TelegramError,
    UploadedFile,
    Violation,
    wire,
)
from .spec import DEFAULT_SPEC_PATH, BotApiSpec

__all__ = [
    "DEFAULT_SPEC_PATH",
    "DEFAULT_TOKEN",
    "EMULATOR_ONLY_KEYS",
    "NO_ANSWER",
    "BotApiEmulator",
    "BotApiSpec",
    "ChatState",
    "HtmlParseError",
    "ParsedText",
    "RecordedRequest",
    "SimGroup",
    "SimUser",
    "StoredFile",
    "TelegramError",
    "UploadedFile",
    "Violation",
    "message_text",
    "parse_html",
    "utf16_len",
    "wire",
]
