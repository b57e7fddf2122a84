"""The on-call queue without Telegram: paging steps, timers in the database, delivery.

Given/When/Then: each test sets up alerts in a real SQLite store, runs the delivery worker at
chosen moments, and checks who was told what. A fake notifier stands in for Telegram.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest

from bot.config import LevelPolicy
from bot.crypto import BotCrypto
from bot.dialogue.content import Content
from bot.escalation import policy
from bot.escalation.desk import StaffDesk, StaffMessage
from bot.escalation.outbox import DeliveryDelayed, DeliveryWorker, RecipientUnreachable, _Pace
from bot.escalation.paging import Paging
from bot.escalation.rota import OnCall, RotaSettings, Shift
from bot.storage.sqlite import SqliteStore, iso
from tests.conftest import ROOT, make_paging, signed_store

REF = "AAAA-BBBB-CCCC"
IMMEDIATE = LevelPolicy(
    ack_timeout_seconds=120, everyone_after_seconds=300, repeat_every_seconds=300
)
ALL_WEEK = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
ROTA = RotaSettings(
    people={"Asha": 5001, "Ben": 5002, "Cat": 5003},
    shifts=[Shift(days=ALL_WEEK, start=time(0), end=time(0), primary="Asha", backup="Ben")],
)


class FakeNotifier:
    def __init__(self) -> None:
        self.sent: list[tuple[str, StaffMessage]] = []
        self.failures: list[Exception] = []
        self.unreachable: set[str] = set()

    async def send(self, recipient: str, message: StaffMessage) -> int:
        if recipient in self.unreachable:
            raise RecipientUnreachable(recipient)
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append((recipient, message))
        return 1000 + len(self.sent)

    def to(self, recipient: str) -> list[str]:
        return [m.html for r, m in self.sent if r == recipient]

    def recipients(self) -> list[str]:
        return [r for r, _ in self.sent]


@pytest.fixture
async def store(data_dir: Path) -> AsyncIterator[SqliteStore]:
    async with signed_store(data_dir) as s:
        yield s


@pytest.fixture
def paging(data_dir: Path) -> Paging:
    return make_paging(BotCrypto.load(data_dir), ROTA, [5001, 5002, 5003], immediate=IMMEDIATE)


@pytest.fixture
def notifier() -> FakeNotifier:
    return FakeNotifier()


def worker_for(
    store: SqliteStore, paging: Paging, notifier: FakeNotifier, **options: object
) -> DeliveryWorker:
    desk = StaffDesk(store, paging.crypto, Content.load(ROOT / "config", "en"), paging)
    return DeliveryWorker(
        store,
        desk,
        paging,
        notifier,
        dm_gap_seconds=0,
        min_gap_seconds=0,
        **options,  # type: ignore[arg-type]
    )


async def raise_alert(store: SqliteStore, ref: str = REF, level: str = "immediate") -> int:
    async with store.transaction() as tx:
        await tx.ensure_case(ref, "pseudonym", "young_person")
        await tx.raise_case_level(ref, level)
        return await tx.add_escalation(ref, level, ["rule:danger_now"])


async def settle(worker: DeliveryWorker, at: datetime) -> None:
    """Run cycles at one moment until nothing more happens."""
    while await worker.run_once(at):
        pass


def started(when: datetime, seconds: float) -> datetime:
    return when + timedelta(seconds=seconds)


# ------------------------------------------------------------------ the policy on its own
def test_steps_follow_the_immediate_policy() -> None:
    on_call = OnCall("Asha", "Ben")
    team = ["Asha", "Ben", "Cat"]
    assert policy.recipients(IMMEDIATE, 0, on_call, team) == ("staff_chat", "dm:Asha")
    assert policy.recipients(IMMEDIATE, 1, on_call, team) == ("dm:Ben",)
    everyone = ("staff_chat", "dm:Asha", "dm:Ben", "dm:Cat")
    assert policy.recipients(IMMEDIATE, 2, on_call, team) == everyone
    assert policy.recipients(IMMEDIATE, 7, on_call, team) == everyone
    assert [policy.offset(IMMEDIATE, s).total_seconds() for s in range(5)] == [
        0,
        120,
        300,
        600,
        900,
    ]


def test_after_downtime_only_the_latest_due_step_fires() -> None:
    # Down for 20 minutes: steps 1..5 all came due; fire step 5 once, not five pages.
    assert policy.due_step(IMMEDIATE, timedelta(minutes=20), fired=1) == 5
    assert policy.due_step(IMMEDIATE, timedelta(seconds=10), fired=0) == 0


def test_nobody_on_call_pages_everyone_at_once() -> None:
    assert policy.recipients(IMMEDIATE, 0, OnCall(None, None), ["Asha", "Ben"]) == (
        "staff_chat",
        "dm:Asha",
        "dm:Ben",
    )


def test_a_policy_without_repeats_still_repeats_hourly() -> None:
    quiet = LevelPolicy(ack_timeout_seconds=900)
    assert policy.offset(quiet, 2) - policy.offset(quiet, 1) == policy.LAST_RESORT_REPEAT


# ------------------------------------------------------------------ the worker and the timers
async def test_given_an_immediate_alert_when_nobody_acknowledges_then_it_climbs_and_repeats(
    store: SqliteStore, paging: Paging, notifier: FakeNotifier
) -> None:
    await raise_alert(store)
    t0 = datetime.now(UTC)
    worker = worker_for(store, paging, notifier)

    await settle(worker, t0)
    assert sorted(notifier.recipients()) == ["dm:Asha", "staff_chat"]

    await settle(worker, started(t0, 60))  # nothing new before the timeout
    assert len(notifier.sent) == 2

    await settle(worker, started(t0, 121))
    assert notifier.recipients()[2:] == ["dm:Ben"]
    assert "Nobody has acknowledged this for 2 min" in notifier.to("dm:Ben")[0]

    await settle(worker, started(t0, 301))
    assert sorted(notifier.recipients()[3:]) == ["dm:Asha", "dm:Ben", "dm:Cat", "staff_chat"]

    await settle(worker, started(t0, 601))  # the first repeat
    assert len(notifier.sent) == 3 + 4 + 4


async def test_acknowledging_stops_every_timer_and_cancels_what_was_not_sent(
    store: SqliteStore, paging: Paging, notifier: FakeNotifier
) -> None:
    escalation = await raise_alert(store)
    t0 = datetime.now(UTC)
    worker = worker_for(store, paging, notifier)
    await settle(worker, t0)
    desk = worker.desk

    result = await desk.acknowledge(escalation, by="Asha")
    assert result.done and result.acknowledged
    again = await desk.acknowledge(escalation, by="Ben")
    assert not again.done and again.by == "Asha"

    await settle(worker, started(t0, 3600))
    assert len(notifier.sent) == 2  # nobody else was woken
    ((_, group_message),) = [
        m for m in await store.sent_alert_messages(REF) if m[0] == "staff_chat"
    ]
    message = await desk.render(await store.deliveries_for_message("staff_chat", group_message))
    assert "Acknowledged by Asha" in message.html
    assert [b.action for row in message.buttons for b in row] == ["take"]


async def test_a_restart_neither_forgets_nor_repeats_a_pending_step(
    data_dir: Path, paging: Paging, notifier: FakeNotifier
) -> None:
    async with signed_store(data_dir) as store:
        await raise_alert(store)
        t0 = datetime.now(UTC)
        await settle(worker_for(store, paging, notifier), t0)
    assert len(notifier.sent) == 2
    # A new process (new worker, same database) after the timeout: the backup step fires once.
    async with signed_store(data_dir) as store:
        worker = worker_for(store, paging, notifier)
        await settle(worker, started(t0, 125))
        await settle(worker, started(t0, 126))
    async with signed_store(data_dir) as store:
        await settle(worker_for(store, paging, notifier), started(t0, 127))
    assert notifier.recipients()[2:] == ["dm:Ben"]


async def test_throttled_and_failed_sends_are_retried_until_delivered(
    store: SqliteStore, paging: Paging, notifier: FakeNotifier
) -> None:
    await raise_alert(store)
    t0 = datetime.now(UTC)
    worker = worker_for(store, paging, notifier)
    notifier.failures = [DeliveryDelayed(0), RuntimeError("HTTP 500"), RuntimeError("HTTP 500")]
    await settle(worker, t0)
    assert len(notifier.sent) < 2  # not everything went out yet, nothing lost
    for seconds in (2, 5, 10, 20):
        await settle(worker, started(t0, seconds))
    assert sorted(notifier.recipients()) == ["dm:Asha", "staff_chat"]


async def test_someone_who_never_started_the_bot_does_not_block_the_others(
    store: SqliteStore, paging: Paging, notifier: FakeNotifier
) -> None:
    await raise_alert(store)
    notifier.unreachable = {"dm:Asha"}
    await settle(worker_for(store, paging, notifier), datetime.now(UTC))
    assert notifier.recipients() == ["staff_chat"]
    assert await store.due_deliveries(iso(datetime.now(UTC) + timedelta(hours=1))) == []


async def test_immediate_alerts_go_before_high_ones(
    store: SqliteStore, paging: Paging, notifier: FakeNotifier
) -> None:
    await raise_alert(store, "AAAA-BBBB-0001", "high")
    await raise_alert(store, "AAAA-BBBB-0002", "immediate")
    worker = worker_for(store, paging, notifier, staff_chat_per_minute=1)
    await settle(worker, datetime.now(UTC))
    (first,) = notifier.to("staff_chat")
    assert "AAAA-BBBB-0002" in first and "IMMEDIATE" in first


async def test_a_burst_is_combined_rather_than_queued_behind_the_group_limit(
    store: SqliteStore, paging: Paging, notifier: FakeNotifier
) -> None:
    # Given a group allowance of 2 messages a minute, one alert, then 11 at once
    worker = worker_for(store, paging, notifier, staff_chat_per_minute=2)
    await raise_alert(store, "AAAA-0000-0000")
    await settle(worker, datetime.now(UTC))
    for n in range(1, 12):
        await raise_alert(store, f"AAAA-0000-{n:04d}")
    # When the worker runs
    await settle(worker, datetime.now(UTC))
    # Then the group got the first alert alone and the rest in one combined message,
    # rather than queueing behind the group's allowance.
    group = notifier.to("staff_chat")
    assert len(group) == 2
    assert "11 alerts need someone" in group[1]
    assert all(f"AAAA-0000-{n:04d}" in group[1] for n in range(1, 12))
    # The person on call got every alert directly, also combined.
    assert all(any(f"AAAA-0000-{n:04d}" in m for m in notifier.to("dm:Asha")) for n in range(12))


async def test_more_alerts_than_one_message_holds_wait_for_the_next_slot(
    store: SqliteStore, paging: Paging, notifier: FakeNotifier
) -> None:
    worker = worker_for(store, paging, notifier, staff_chat_per_minute=1)
    for n in range(30):
        await raise_alert(store, f"BBBB-0000-{n:04d}")
    await settle(worker, datetime.now(UTC))
    (group,) = notifier.to("staff_chat")
    assert "25 alerts need someone" in group  # the most one message lists
    assert len(group) < 4096
    waiting = [d for d in await store.due_deliveries("9999") if d.recipient == "staff_chat"]
    assert len(waiting) == 5  # kept for the next slot, not dropped


async def test_a_send_cut_short_by_a_crash_is_resent_saying_it_may_repeat(
    store: SqliteStore, paging: Paging, notifier: FakeNotifier
) -> None:
    await raise_alert(store)
    worker = worker_for(store, paging, notifier)
    now = datetime.now(UTC)
    await paging.fire_due(store, now)
    due = await store.due_deliveries(iso(now))
    async with store.transaction() as tx:  # what a crash mid-request leaves behind
        await tx.deliveries_sending([d.id for d in due])
    await settle(worker, now)
    assert all("Sent again after a restart" in m.html for _, m in notifier.sent)
    assert len(notifier.sent) == 2


async def test_the_digest_is_posted_once_a_day(
    store: SqliteStore, paging: Paging, notifier: FakeNotifier
) -> None:
    await raise_alert(store)
    worker = worker_for(store, paging, notifier, digest_time=time(9, 0))
    now = datetime.now(UTC)
    await settle(worker, now)  # sets the timer
    due = datetime.fromisoformat(await store.clock("digest") or "")
    assert now < due <= now + timedelta(days=1)
    await settle(worker, due + timedelta(seconds=1))
    await settle(worker, due + timedelta(seconds=2))
    digests = [m for m in notifier.to("staff_chat") if "Daily digest" in m]
    assert len(digests) == 1
    assert "Open cases: 1 (immediate 1" in digests[0]


async def test_a_taken_pager_beats_the_rota_until_it_next_changes(
    store: SqliteStore, paging: Paging
) -> None:
    now = datetime.now(UTC)
    assert await paging.on_call(store, now) == OnCall("Asha", "Ben")
    async with store.transaction() as tx:
        await tx.take_pager("Cat", iso(now + timedelta(hours=1)))
    assert await paging.on_call(store, now) == OnCall("Cat", "Ben")
    assert await paging.on_call(store, now + timedelta(hours=2)) == OnCall("Asha", "Ben")


def test_the_pace_allows_a_short_burst_then_the_steady_rate() -> None:
    pace = _Pace(burst=3, per_second=0.5, min_gap=0.2)
    sent = []
    for tick in range(100):  # ten seconds in tenths
        clock = tick / 10
        if pace.ready(clock):
            pace.spend(clock)
            sent.append(clock)
    assert sent[:3] == [0.0, 0.2, 0.4]  # the burst, min_gap apart
    assert len(sent) <= 3 + 10 * 0.5 + 1  # then about one every two seconds
    assert all(b - a >= 0.2 - 1e-9 for a, b in itertools.pairwise(sent))
