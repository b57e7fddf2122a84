"""Telegram's broadcast limits for everything the bot sends, with alerts first.

Telegram allows a bot about 30 messages a second overall and 20 a minute in a group; beyond
that it answers 429. Both of the bot's sessions (replies to reporters and staff commands;
alerts from the delivery worker) share one `OutboundLimiter`, so together they stay inside
those limits. Where requests wait for the same room, staff alerts go first, then the 999 line
to a reporter who just raised an alarm, then everything else (`Priority`).

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
from collections import Counter
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import IntEnum

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
# reporter who just raised an alarm): it goes at `Priority.URGENT_REPLY`.
SEND_URGENTLY: ContextVar[bool] = ContextVar("send_urgently", default=False)

# Methods that post or change a message: the ones Telegram counts.
COUNTED_PREFIXES = ("send", "edit", "copy", "forward")


class Priority(IntEnum):
    """Who goes first when requests wait for the same room.

    Staff alerts come before the 999 line: when many reporters raise alarms at once, their
    999 lines would otherwise take Telegram's 30 a second and the staff hear of the cases
    seconds late. Both may use the whole 30; ordinary requests leave `reserved_for_alerts`
    of them free."""

    ORDINARY = 0  # replies to reporters, answers to staff commands
    URGENT_REPLY = 1  # the 999 line to a reporter who just raised an alarm (`SEND_URGENTLY`)
    STAFF_ALERT = 2  # the delivery worker's alerts to the staff chat and the on-call person


@dataclass(eq=False)  # each window is its own budget: two are never the same by value
class _Window:
    """At most `limit` events in any `span` seconds."""

    limit: int
    span: float
    times: list[float] = field(default_factory=list)  # sorted
    # How many requests of each priority are waiting because this window is full. A request
    # of lower priority that needs this window stands aside until they have gone.
    waiting: Counter[Priority] = field(default_factory=Counter)

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

    def outranks(self, priority: Priority) -> bool:
        """Whether a request of higher priority than `priority` is waiting for this window."""
        return any(count > 0 for p, count in self.waiting.items() if p > priority)


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
        # Kept free every second for staff alerts and 999 lines: a burst of ordinary replies
        # cannot take them all.
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
        # Set (and replaced by a fresh one) whenever a waiting request stops waiting for a
        # window, so requests standing aside for it look again.
        self._stopped_waiting = asyncio.Event()

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

    def _windows(self, chat_id: int | None) -> list[_Window]:
        """The overall window, then the chat's own if it has one."""
        if chat_id is not None and chat_id < 0:  # groups and channels; users are > 0
            return [self._overall, self._group(chat_id)]
        if chat_id is not None and self._pace_private_chats:
            return [self._overall, self._private(chat_id)]
        return [self._overall]

    async def acquire(self, chat_id: int | None, priority: Priority = Priority.ORDINARY) -> Slot:
        """Wait for a slot to send to `chat_id`. While a request of higher priority is waiting
        for a window this one needs too, this one stands aside, so that one goes first. Pass
        the slot to `sent` once the request is done."""
        waiting_for: list[_Window] = []
        try:
            while True:
                windows = self._windows(chat_id)
                if any(w.outranks(priority) for w in windows):
                    await self._stopped_waiting.wait()
                    continue
                now = self._clock()
                overall = self._ordinary_per_second if priority == Priority.ORDINARY else None
                waits = [self._overall.wait(now, overall)] + [w.wait(now) for w in windows[1:]]
                wait = max(waits)
                if wait <= 0:
                    for w in windows:
                        w.take(now)
                    return Slot(now, windows)
                # Counted as waiting only for the window that holds it longest. A staff alert
                # held for up to a minute by the staff chat's 20 a minute must not hold the
                # overall budget all that time, or a reporter's 999 line would wait that
                # minute too (a 999 line never needs the staff chat's window itself). If the
                # overall budget is full when the chat's window opens, the alert is counted
                # there then and takes the next overall slot, about a second later at most.
                # Standing aside for alerts on the overall budget cannot starve 999 lines:
                # alerts are few (under 20 a minute to the group, one a second per person).
                longest = [w for w, t in zip(windows, waits, strict=True) if t == wait]
                self._move_waiting(priority, waiting_for, longest)
                await self._sleep(wait)
        finally:
            self._move_waiting(priority, waiting_for, [])
            if len(self._chats) > 10_000:
                self._forget_idle()

    def _move_waiting(
        self, priority: Priority, waiting_for: list[_Window], now_waiting_for: list[_Window]
    ) -> None:
        """Count a request as waiting for `now_waiting_for` instead of `waiting_for` (which is
        updated), and wake the requests standing aside if it left a window."""
        left = [w for w in waiting_for if w not in now_waiting_for]
        for w in left:
            w.waiting[priority] -= 1
        for w in now_waiting_for:
            if w not in waiting_for:
                w.waiting[priority] += 1
        waiting_for[:] = now_waiting_for
        if left:
            self._stopped_waiting.set()
            self._stopped_waiting = asyncio.Event()

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
        for chat_id, w in list(self._chats.items()):
            if w.wait(now) == 0 and not w.times and not any(w.waiting.values()):
                del self._chats[chat_id]


class LimitRequests(BaseRequestMiddleware):
    """Puts every counted request of one session through the shared limiter, at `priority`
    or, while `SEND_URGENTLY` is set, at least `Priority.URGENT_REPLY`."""

    def __init__(self, limiter: OutboundLimiter, priority: Priority = Priority.ORDINARY) -> None:
        self.limiter = limiter
        self.priority = priority

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        name = type(method).__name__.lower()
        if name.startswith(COUNTED_PREFIXES):
            chat_id = getattr(method, "chat_id", None)
            priority = self.priority
            if SEND_URGENTLY.get():
                priority = max(priority, Priority.URGENT_REPLY)
            chat = chat_id if isinstance(chat_id, int) else None
            slot = await self.limiter.acquire(chat, priority)
            try:
                return await make_request(bot, method)
            finally:
                self.limiter.sent(slot)
        return await make_request(bot, method)
