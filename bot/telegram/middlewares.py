"""aiogram request middleware: retries for outgoing requests."""

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
