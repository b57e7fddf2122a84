"""aiogram request middlewares: retries for outgoing requests, and keeping each answer's
parsed type alive between requests."""

from __future__ import annotations

import asyncio
import logging

from aiogram import Bot
from aiogram.client.session.middlewares.base import (
    BaseRequestMiddleware,
    NextRequestMiddlewareType,
)
from aiogram.exceptions import TelegramNetworkError, TelegramRetryAfter, TelegramServerError
from aiogram.methods import GetUpdates, Response, TelegramMethod
from aiogram.methods.base import TelegramType

log = logging.getLogger("safeguard.telegram")


class KeepResponseTypes(BaseRequestMiddleware):
    """Hold a strong reference to `Response[...]` for each answer type the bot has met.

    aiogram parses every answer through `Response[method.__returning__]`, and pydantic keeps
    those generic classes only in a weak cache, so the garbage collector frees them between
    requests and the next request rebuilds one (about 3 ms each). Under load that was a
    quarter of the bot's CPU.
    """

    def __init__(self) -> None:
        self._kept: dict[object, type] = {}

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        returning = method.__returning__
        if returning not in self._kept:
            self._kept[returning] = Response[returning]  # type: ignore[valid-type]
        return await make_request(bot, method)


class RetryRequests(BaseRequestMiddleware):
    """Retry a request Telegram throttled (429, after `retry_after`) or failed (5xx, network).

    getUpdates is left alone: the polling loop has its own back-off.
    """

    def __init__(self, attempts: int = 4, max_wait: float = 30.0) -> None:
        self.attempts = attempts
        self.max_wait = max_wait

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        if isinstance(method, GetUpdates):
            return await make_request(bot, method)  # type: ignore[arg-type]
        for attempt in range(1, self.attempts + 1):
            try:
                return await make_request(bot, method)
            except TelegramRetryAfter as exc:
                if attempt == self.attempts or exc.retry_after > self.max_wait:
                    raise
                log.warning(
                    "telegram_throttled method=%s retry_after=%s",
                    type(method).__name__,
                    exc.retry_after,
                )
                await asyncio.sleep(exc.retry_after)
            except (TelegramServerError, TelegramNetworkError) as exc:
                if attempt == self.attempts:
                    raise
                log.warning(
                    "telegram_failed method=%s error=%s attempt=%s",
                    type(method).__name__,
                    type(exc).__name__,
                    attempt,
                )
                await asyncio.sleep(min(0.5 * 2**attempt, self.max_wait))
        raise AssertionError("unreachable")
