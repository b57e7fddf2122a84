"""The outbound limiter on a simulated clock: Telegram's limits held, alerts served first,
then 999 lines, then everything else."""

from __future__ import annotations

import asyncio

from bot.telegram.limits import (
    JITTER_SECONDS,
    PRIVATE_CHAT_GAP_SECONDS,
    OutboundLimiter,
    Priority,
)

GROUP = -100123
REPORTER = 4242


class SimClock:
    """Time that only moves when someone sleeps, so the test is exact and instant."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


class ManualClock(SimClock):
    """Time that moves only when the test says: sleepers wake in deadline order."""

    def __init__(self) -> None:
        super().__init__()
        self.sleepers: list[tuple[float, asyncio.Future[None]]] = []

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.sleepers.append((self.now + seconds, future))
        await future

    async def advance(self, seconds: float) -> None:
        self.now += seconds
        for deadline, future in sorted(self.sleepers, key=lambda s: s[0]):
            if deadline <= self.now and not future.done():
                future.set_result(None)
        self.sleepers = [s for s in self.sleepers if not s[1].done()]
        for _ in range(10):
            await asyncio.sleep(0)


def limiter(clock: SimClock, **kw: int) -> OutboundLimiter:
    return OutboundLimiter(clock=clock, sleep=clock.sleep, **kw)


async def test_no_more_than_the_overall_rate_in_any_second_and_alerts_keep_a_share() -> None:
    clock = SimClock()
    lim = limiter(clock, per_second=30, reserved_for_alerts=5)
    stamps = []
    for n in range(95):
        await lim.acquire(10_000 + n)  # replies to many reporters
        stamps.append(clock.now)
    assert max(sum(1 for s in stamps if t <= s < t + 1.0) for t in stamps) == 25
    before = clock.now
    for n in range(5):
        await lim.acquire(-n - 1, Priority.STAFF_ALERT)  # alerts still find room this second
    assert clock.now == before


async def test_a_group_gets_twenty_a_minute_and_a_reporter_one_a_second() -> None:
    clock = SimClock()
    lim = OutboundLimiter(clock=clock, sleep=clock.sleep, pace_private_chats=True)
    for _ in range(21):
        await lim.acquire(GROUP)
    assert clock.now >= 60.0
    clock.now = 1000.0
    for _ in range(3):
        await lim.acquire(REPORTER)
    assert clock.now == 1002.2  # Telegram's pace for one chat, so it never answers 429
    await lim.acquire(REPORTER + 1)
    assert clock.now == 1002.2  # another reporter does not wait behind them


async def test_by_default_a_reporter_gets_one_message_a_second() -> None:
    clock = SimClock()
    lim = limiter(clock)
    for _ in range(2):
        await lim.acquire(REPORTER)  # a reporter who answers at once after the bot's reply
    assert clock.now == PRIVATE_CHAT_GAP_SECONDS


async def test_unpaced_a_reporters_messages_go_at_once() -> None:
    clock = SimClock()
    lim = OutboundLimiter(clock=clock, sleep=clock.sleep, pace_private_chats=False)
    for _ in range(3):
        await lim.acquire(REPORTER)
    assert clock.now == 0.0


async def test_an_alert_waiting_for_a_slot_goes_before_ordinary_messages() -> None:
    clock = ManualClock()
    lim = limiter(clock, group_per_minute=1)
    await lim.acquire(GROUP)  # the group's allowance for this minute is used
    order: list[str] = []

    async def send(name: str, priority: Priority) -> None:
        await lim.acquire(GROUP, priority)
        order.append(name)

    # Given an ordinary reply waiting for the group's next slot, then an alert
    ordinary = asyncio.create_task(send("reply", Priority.ORDINARY))
    await asyncio.sleep(0)
    alert = asyncio.create_task(send("alert", Priority.STAFF_ALERT))
    await asyncio.sleep(0)
    # When the minute passes, the alert takes the slot; the reply waits for the next one
    await clock.advance(60 + JITTER_SECONDS)
    assert order == ["alert"]
    await clock.advance(60 + JITTER_SECONDS)
    await asyncio.gather(ordinary, alert)
    assert order == ["alert", "reply"]


async def test_a_request_held_up_after_its_slot_counts_from_when_it_finished() -> None:
    # Given a reply to a reporter that took its slot at 0 s but only reached Telegram, and
    # finished, at 0.4 s (a busy event loop, a slow connection),
    clock = SimClock()
    lim = limiter(clock)
    slot = await lim.acquire(REPORTER)
    clock.now = 0.4
    lim.sent(slot)
    # When the next message to that reporter waits for its slot,
    await lim.acquire(REPORTER)
    # Then it keeps a full gap after the first one finished, not after it started.
    assert clock.now >= 0.4 + PRIVATE_CHAT_GAP_SECONDS


class Queue:
    """Requests to one limiter on the manual clock, noting who got a slot, in order."""

    def __init__(self, lim: OutboundLimiter) -> None:
        self.lim = lim
        self.served: list[str] = []
        self.tasks: list[asyncio.Task[None]] = []

    async def add(self, name: str, chat_id: int, priority: Priority) -> None:
        """Start a request and let it take a slot, or start waiting for one."""

        async def request() -> None:
            await self.lim.acquire(chat_id, priority)
            self.served.append(name)

        self.tasks.append(asyncio.create_task(request()))
        for _ in range(5):
            await asyncio.sleep(0)

    async def fill_the_second(self, count: int = 30) -> None:
        """999 lines to other reporters take `count` slots: with what went before, all 30 of
        this second. Then forget who was served so far."""
        for n in range(count):
            await self.add("earlier 999 line", 20_000 + n, Priority.URGENT_REPLY)
        assert self.served.count("earlier 999 line") == count
        self.served.clear()


async def test_a_staff_alert_goes_before_999_lines_that_were_waiting_longer() -> None:
    # Given a burst of reporters' 999 lines using Telegram's 30 a second, and 40 more waiting
    clock = ManualClock()
    queue = Queue(limiter(clock))
    await queue.fill_the_second()
    for n in range(40):
        await queue.add("999 line", REPORTER + n, Priority.URGENT_REPLY)
    # When a staff alert comes in after them
    await queue.add("alert", GROUP, Priority.STAFF_ALERT)
    assert queue.served == []
    # Then it takes the first slot that frees, and the 999 lines the rest
    await clock.advance(1.0 + JITTER_SECONDS)
    assert queue.served == ["alert"] + ["999 line"] * 29
    await clock.advance(1.0 + JITTER_SECONDS)
    assert queue.served.count("999 line") == 40
    await asyncio.gather(*queue.tasks)


async def test_a_staff_alert_waiting_for_the_staff_chats_minute_holds_up_no_999_line() -> None:
    # Given the staff chat's allowance for this minute used, and this second's 30 too
    clock = ManualClock()
    queue = Queue(limiter(clock, group_per_minute=1))
    await queue.add("earlier alert", GROUP, Priority.STAFF_ALERT)
    await queue.fill_the_second(29)
    # When a staff alert waits for the staff chat's next minute, and 999 lines for the second
    await queue.add("alert", GROUP, Priority.STAFF_ALERT)
    for n in range(5):
        await queue.add("999 line", REPORTER + n, Priority.URGENT_REPLY)
    # Then the 999 lines go as soon as the second has passed, not a minute later
    await clock.advance(1.0 + JITTER_SECONDS)
    assert queue.served == ["999 line"] * 5
    # And the alert when the staff chat's minute has passed
    await clock.advance(59.0)
    assert queue.served[-1] == "alert"
    await asyncio.gather(*queue.tasks)


async def test_a_staff_alert_waiting_for_the_staff_chats_minute_holds_up_no_reply() -> None:
    # Given a staff alert waiting for the staff chat's next minute
    clock = ManualClock()
    queue = Queue(limiter(clock, group_per_minute=1))
    await queue.add("earlier alert", GROUP, Priority.STAFF_ALERT)
    await queue.add("alert", GROUP, Priority.STAFF_ALERT)
    assert queue.served == ["earlier alert"]
    # When reporters are answered, they are answered at once
    for n in range(5):
        await queue.add("reply", REPORTER + n, Priority.ORDINARY)
    assert queue.served == ["earlier alert"] + ["reply"] * 5
    # And a reply in the staff chat still waits behind the alert
    await queue.add("staff chat reply", GROUP, Priority.ORDINARY)
    await clock.advance(60 + JITTER_SECONDS)
    assert queue.served[-1] == "alert"
    await clock.advance(60 + JITTER_SECONDS)
    assert queue.served[-1] == "staff chat reply"
    await asyncio.gather(*queue.tasks)


async def test_ordinary_replies_wait_behind_staff_alerts_and_999_lines() -> None:
    # Given this second's 30 used, and replies waiting, then 999 lines, then a staff alert
    clock = ManualClock()
    queue = Queue(limiter(clock))
    await queue.fill_the_second()
    for n in range(10):
        await queue.add("reply", 30_000 + n, Priority.ORDINARY)
    for n in range(10):
        await queue.add("999 line", REPORTER + n, Priority.URGENT_REPLY)
    await queue.add("alert", GROUP, Priority.STAFF_ALERT)
    # When the second has passed, the alert goes first, then the 999 lines, then the replies
    await clock.advance(1.0 + JITTER_SECONDS)
    assert queue.served == ["alert"] + ["999 line"] * 10 + ["reply"] * 10
    await asyncio.gather(*queue.tasks)
