"""Durable long polling against a fake Telegram: every update handled once, none confirmed
before its handling finished."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from types import SimpleNamespace
from typing import Any

from aiogram.methods import GetUpdates
from aiogram.types import Update

from bot.telegram.polling import UPDATE_SAVED, DurablePoller


class FakeTelegram:
    """getUpdates as Telegram does it: up to 100 from the offset, as JSON; lower ones are
    forgotten."""

    def __init__(self) -> None:
        self.pending: list[dict[str, Any]] = []
        self.confirmed_while_running: list[int] = []
        self.session = SimpleNamespace(timeout=60)
        self.running: set[int] = set()

    def add(self, update_id: int) -> None:
        self.pending.append({"update_id": update_id})

    async def __call__(self, method: GetUpdates, request_timeout: int = 0) -> list[dict[str, Any]]:
        offset = method.offset or 0
        forgotten = [u["update_id"] for u in self.pending if u["update_id"] < offset]
        self.confirmed_while_running += [i for i in forgotten if i in self.running]
        self.pending = [u for u in self.pending if u["update_id"] >= offset]
        await asyncio.sleep(0.001 if method.timeout == 0 else 0.005)
        return self.pending[:100]


class FakeDispatcher:
    def __init__(self, telegram: FakeTelegram) -> None:
        self.telegram = telegram
        self.handled: Counter[int] = Counter()

    async def feed_update(self, bot: Any, update: Update, **kw: Any) -> None:
        self.telegram.running.add(update.update_id)
        await asyncio.sleep(random.uniform(0, 0.02))
        self.handled[update.update_id] += 1
        self.telegram.running.discard(update.update_id)

    async def emit_startup(self, **kw: Any) -> None: ...

    async def emit_shutdown(self, **kw: Any) -> None: ...


async def test_every_update_is_handled_once_and_confirmed_only_after() -> None:
    random.seed(7)
    telegram = FakeTelegram()
    dp = FakeDispatcher(telegram)
    poller = DurablePoller(dp, telegram, 1, [])  # type: ignore[arg-type]
    task = asyncio.create_task(poller.run(drain_seconds=5))
    for update_id in range(1, 301):
        telegram.add(update_id)
        if update_id % 7 == 0:
            await asyncio.sleep(0.003)
    for _ in range(500):
        if len(dp.handled) == 300:
            break
        await asyncio.sleep(0.01)
    poller.stop()
    await task
    assert set(dp.handled) == set(range(1, 301))
    assert max(dp.handled.values()) == 1
    assert telegram.confirmed_while_running == []


async def test_one_persons_updates_are_handled_in_the_order_they_sent_them() -> None:
    # Given a button tap whose handling is slow, then words typed straight after by the same
    # person, and another person's message in between,
    telegram = FakeTelegram()
    order: list[str] = []

    class SlowFirst(FakeDispatcher):
        async def feed_update(self, bot: Any, update: Update, **kw: Any) -> None:
            if update.update_id == 1:
                await asyncio.sleep(0.2)
            order.append(f"{update.update_id}")
            self.handled[update.update_id] += 1

    dp = SlowFirst(telegram)
    poller = DurablePoller(dp, telegram, 1, [])  # type: ignore[arg-type]
    tap = {"id": "q1", "chat_instance": "c", "from": {"id": 11, "is_bot": False, "first_name": "A"}}
    words = {
        "message_id": 5,
        "date": 0,
        "chat": {"id": 11, "type": "private"},
        "from": {"id": 11, "is_bot": False, "first_name": "A"},
        "text": "typed straight after",
    }
    other = {**words, "chat": {"id": 22, "type": "private"}, "from": {**words["from"], "id": 22}}
    telegram.pending += [
        {"update_id": 1, "callback_query": tap},
        {"update_id": 2, "message": other},
        {"update_id": 3, "message": words},
    ]
    # When they are polled in one batch,
    task = asyncio.create_task(poller.run(drain_seconds=5))
    for _ in range(200):
        if len(dp.handled) == 3:
            break
        await asyncio.sleep(0.01)
    poller.stop()
    await task
    # Then the other person is not held up, and the words wait for the tap before them.
    assert order == ["2", "1", "3"]


async def test_a_saved_update_no_longer_hides_newer_ones_while_its_reply_waits() -> None:
    # Given 100 updates whose turns are saved but whose replies wait (Telegram's pace),
    telegram = FakeTelegram()
    release = asyncio.Event()
    seen: list[int] = []

    class SavedThenWaiting(FakeDispatcher):
        async def feed_update(self, bot: Any, update: Update, **kw: Any) -> None:
            seen.append(update.update_id)
            if update.update_id <= 100:
                saved = UPDATE_SAVED.get()
                assert saved is not None
                saved()
                await release.wait()
            self.handled[update.update_id] += 1

    dp = SavedThenWaiting(telegram)
    poller = DurablePoller(dp, telegram, 1, [])  # type: ignore[arg-type]
    for update_id in range(1, 102):
        telegram.add(update_id)
    task = asyncio.create_task(poller.run(drain_seconds=5))
    # When the 101st arrives (an urgent message, say), it is read at once,
    for _ in range(200):
        if 101 in seen:
            break
        await asyncio.sleep(0.01)
    assert 101 in seen
    release.set()
    for _ in range(200):
        if len(dp.handled) == 101:
            break
        await asyncio.sleep(0.01)
    poller.stop()
    await task
    # and every update was handled exactly once.
    assert set(dp.handled) == set(range(1, 102)) and max(dp.handled.values()) == 1


async def test_an_update_that_does_not_parse_is_set_aside_and_the_rest_are_handled() -> None:
    # Given an update aiogram cannot read (a message with no chat) between two good ones,
    telegram = FakeTelegram()
    dp = FakeDispatcher(telegram)
    poller = DurablePoller(dp, telegram, 1, [])  # type: ignore[arg-type]
    telegram.add(1)
    telegram.pending.append({"update_id": 2, "message": {"message_id": 1, "date": 0}})
    telegram.add(3)
    # When they are polled,
    task = asyncio.create_task(poller.run(drain_seconds=5))
    for _ in range(200):
        if len(dp.handled) == 2:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    poller.stop()
    await task
    # Then the good ones are handled once, and the bad one is confirmed instead of coming
    # back with every poll.
    assert dict(dp.handled) == {1: 1, 3: 1}
    assert poller.offset == 4
