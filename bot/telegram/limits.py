"""Telegram's broadcast limits for everything the bot sends, with alerts first.

Telegram allows a bot about 30 messages a second overall and 20 a minute in a group; beyond
that it answers 429. Both of the bot's sessions (replies to reporters and staff commands;
alerts from the delivery worker) share one `OutboundLimiter`, so together they stay inside
those limits, and an alert waiting for a slot is served before any ordinary message.

Private chats are paced to one message a second, as Telegram asks (`telegram.pace_private_chats`,
on by default). A turn is one message, so only a reporter who answers within a second of the
bot waits, and an alert's 999 line is never behind a queue of ordinary replies to others.
Deleting messages (Leave now) is never counted, so it never waits. Every window is a little
longer than Telegram's: requests reach it with some jitter, and one that arrives early earns
a 429.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field

from aiogram import Bot
from aiogram.client.session.middlewares.base import (
    BaseRequestMiddleware,
    NextRequestMiddlewareType,
)
from aiogram.methods import Response, TelegramMethod
from aiogram.methods.base import TelegramType

# Margin on every window: a request taken at t may reach Telegram a little after one taken
# later (the event loop, the connection pool), so exact windows earn 429s under load.
JITTER_SECONDS = 0.1
PRIVATE_CHAT_GAP_SECONDS = 1.0 + JITTER_SECONDS

# Set while sending something that must not wait behind ordinary replies (the 999 line to a
# reporter who just raised an alarm): it takes the alerts' lane.
SEND_URGENTLY: ContextVar[bool] = ContextVar("send_urgently", default=False)

# Methods that post or change a message: the ones Telegram counts.
COUNTED_PREFIXES = ("send", "edit", "copy", "forward")


@dataclass
class _Window:
    """At most `limit` events in any `span` seconds."""

    limit: int
    span: float
    times: list[float] = field(default_factory=list)  # sorted

    def wait(self, now: float, limit: int | None = None) -> float:
        """How long until one more fits (under `limit` if given, else the window's own)."""
        limit = self.limit if limit is None else limit
        expired = bisect.bisect_right(self.times, now - self.span)
        del self.times[:expired]
        if len(self.times) < limit:
            return 0.0
        return self.times[len(self.times) - limit] + self.span - now

    def take(self, now: float) -> None:
        bisect.insort(self.times, now)

    def restamp(self, taken: float, done: float) -> None:
        """The request taken at `taken` finished at `done`: count it from then."""
        at = bisect.bisect_left(self.times, taken)
        if at < len(self.times) and self.times[at] == taken:
            del self.times[at]
            bisect.insort(self.times, max(taken, done))


@dataclass
class Slot:
    """A place taken in the limiter's windows by one request."""

    taken: float
    windows: list[_Window]


class OutboundLimiter:
    def __init__(
        self,
        per_second: int = 30,
        group_per_minute: int = 20,
        # Kept free every second for alerts: a burst of replies cannot take them all.
        reserved_for_alerts: int = 5,
        pace_private_chats: bool = True,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._overall = _Window(per_second, 1.0 + JITTER_SECONDS)
        self._ordinary_per_second = max(1, per_second - reserved_for_alerts)
        self._group_per_minute = group_per_minute
        self._pace_private_chats = pace_private_chats
        self._chats: dict[int, _Window] = {}
        self._clock = clock
        self._sleep = sleep
        self._urgent_waiting = 0
        self._urgent_clear = asyncio.Event()
        self._urgent_clear.set()

    def _group(self, chat_id: int) -> _Window:
        window = self._chats.get(chat_id)
        if window is None:
            window = self._chats[chat_id] = _Window(self._group_per_minute, 60.0 + JITTER_SECONDS)
        return window

    def _private(self, chat_id: int) -> _Window:
        window = self._chats.get(chat_id)
        if window is None:
            window = self._chats[chat_id] = _Window(1, PRIVATE_CHAT_GAP_SECONDS)
        return window

    async def acquire(self, chat_id: int | None, urgent: bool = False) -> Slot:
        """Wait for a slot to send to `chat_id`. Ordinary messages also wait while any alert
        is waiting, so alerts go first. Pass the slot to `sent` once the request is done."""
        if urgent:
            self._urgent_waiting += 1
            self._urgent_clear.clear()
        try:
            while True:
                if not urgent:
                    await self._urgent_clear.wait()
                now = self._clock()
                windows = [self._overall]
                if chat_id is not None and chat_id < 0:  # groups and channels; users are > 0
                    windows.append(self._group(chat_id))
                elif chat_id is not None and self._pace_private_chats:
                    windows.append(self._private(chat_id))
                overall = None if urgent else self._ordinary_per_second
                wait = max([self._overall.wait(now, overall)] + [w.wait(now) for w in windows[1:]])
                if wait <= 0:
                    for w in windows:
                        w.take(now)
                    return Slot(now, windows)
                await self._sleep(wait)
        finally:
            if urgent:
                self._urgent_waiting -= 1
                if self._urgent_waiting == 0:
                    self._urgent_clear.set()
            if len(self._chats) > 10_000:
                self._forget_idle()

    def sent(self, slot: Slot) -> None:
        """The request has finished: from now on it counts from when it finished, not from
        when it started. Telegram counts a request when it arrives, somewhere in between; a
        request held up after taking its slot (a busy event loop, a slow connection) would
        otherwise arrive bunched with later ones and earn a 429."""
        done = self._clock()
        for window in slot.windows:
            window.restamp(slot.taken, done)

    def _forget_idle(self) -> None:
        now = self._clock()
        for chat_id in [c for c, w in self._chats.items() if w.wait(now) == 0 and not w.times]:
            del self._chats[chat_id]


class LimitRequests(BaseRequestMiddleware):
    """Puts every counted request of one session through the shared limiter."""

    def __init__(self, limiter: OutboundLimiter, urgent: bool = False) -> None:
        self.limiter = limiter
        self.urgent = urgent

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        name = type(method).__name__.lower()
        if name.startswith(COUNTED_PREFIXES):
            chat_id = getattr(method, "chat_id", None)
            urgent = self.urgent or SEND_URGENTLY.get()
            slot = await self.limiter.acquire(chat_id if isinstance(chat_id, int) else None, urgent)
            try:
                return await make_request(bot, method)
            finally:
                self.limiter.sent(slot)
        return await make_request(bot, method)
