"""The outbound limiter on a simulated clock: Telegram's limits held, alerts served first."""

from __future__ import annotations

import asyncio

from bot.telegram.limits import JITTER_SECONDS, PRIVATE_CHAT_GAP_SECONDS, OutboundLimiter

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
        await lim.acquire(-n - 1, urgent=True)  # alerts still find room this second
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

    async def send(name: str, urgent: bool) -> None:
        await lim.acquire(GROUP, urgent=urgent)
        order.append(name)

    # Given an ordinary reply waiting for the group's next slot, then an alert
    ordinary = asyncio.create_task(send("reply", False))
    await asyncio.sleep(0)
    alert = asyncio.create_task(send("alert", True))
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
