"""One sender flooding the bot: slowed and flagged to staff, never dropped."""

from __future__ import annotations

from pathlib import Path

from bot.config import FloodSettings
from bot.crypto import BotCrypto
from bot.dialogue.content import Content
from bot.dialogue.engine import Inbound
from bot.dialogue.flood import FloodGuard
from bot.dialogue.service import ReportingService
from bot.storage.sqlite import SqliteStore
from nlu.pipeline import Nlu
from tests.conftest import make_paging
from tests.unit.test_service import Reporter, full_report


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_passes_then_the_sender_is_slowed_and_staff_told_once() -> None:
    clock = FakeClock()
    guard = FloodGuard(FloodSettings(burst=5, per_minute=60, tell_staff_every_minutes=10), clock)
    verdicts = [guard.note("a") for _ in range(8)]
    assert [v.slowed for v in verdicts] == [False] * 5 + [True] * 3
    assert [v.tell_reporter for v in verdicts].count(True) == 1
    assert [v.tell_staff for v in verdicts].count(True) == 1
    # Someone else is not held up by it.
    assert not guard.note("b").slowed
    # After a pause at the steady rate they are answered again; staff are not told again
    # until the quiet period has passed.
    clock.now += 4
    assert not guard.note("a").slowed
    clock.now += 0.01
    assert not [guard.note("a") for _ in range(10)][-1].tell_staff
    clock.now += 601
    flood = [guard.note("a") for _ in range(30)]
    assert any(v.tell_staff for v in flood)


def _service(
    content: Content, store: SqliteStore, data_dir: Path, nlu: Nlu, **flood: int
) -> ReportingService:
    crypto = BotCrypto.load(data_dir)
    guard = FloodGuard(FloodSettings(**flood))
    return ReportingService(content, store, crypto, nlu, make_paging(crypto), flood=guard)


async def test_a_flood_is_kept_answered_less_flagged_and_danger_still_gets_through(
    content: Content, store: SqliteStore, data_dir: Path, nlu: Nlu
) -> None:
    # Given a reporter mid-report who then sends 30 messages in a rush,
    service = _service(content, store, data_dir, nlu, burst=5, per_minute=6)
    r = Reporter(service)
    await r.do(Inbound("start"))
    await r.press(content.wording.audiences["young_person"])
    before = len(r.m.replies)
    for i in range(30):
        await r.say(f"message number {i} and he keeps messaging me")
    # Then every message was handled (each update marked processed: nothing dropped),
    assert all([await store.was_processed(u) for u in range(3, r.update_id + 1)])
    # the bot stopped answering each one and said why, once,
    replies = r.m.replies[before:]
    assert len(replies) < 30
    notices = [x for x in replies if x.html == content.wording.flood_slow_down]
    assert len(notices) == 1 and "999" in notices[0].html
    # and the staff chat is told once, naming the case but nothing about who.
    due = [d for d in await store.due_deliveries("9999") if d.kind == "flood"]
    assert len(due) == 1 and due[0].detail == "messages"
    # When they then write that they are in danger right now,
    so_far = len(r.m.replies)
    await r.say("please help hes outside my house rn")
    # Then they are still given the numbers at once, and staff are alerted.
    assert any("999" in x.html for x in r.m.replies[so_far:])
    assert any(d.kind == "alert" for d in await store.due_deliveries("9999"))


async def test_more_reports_in_a_day_than_the_limit_are_flagged_once(
    content: Content, store: SqliteStore, data_dir: Path, nlu: Nlu
) -> None:
    service = _service(content, store, data_dir, nlu, reports_per_day=1)
    r = Reporter(service)
    await full_report(r, content)
    assert not [d for d in await store.due_deliveries("9999") if d.kind == "flood"]
    second = await full_report(r, content)
    await full_report(r, content)
    flags = [d for d in await store.due_deliveries("9999") if d.kind == "flood"]
    assert [(d.detail, d.case_ref) for d in flags] == [("reports:2", second)]
    assert len(await store.list_cases()) == 3  # every report kept


async def test_staff_see_what_kind_of_flood_and_the_case_never_who(
    store: SqliteStore, data_dir: Path
) -> None:
    from tests.unit.test_desk import desk_for

    desk = desk_for(store, data_dir)
    async with store.transaction() as tx:
        await tx.ensure_case("K7FQ-3QXM-9PTA", "p", None)
        await tx.add_delivery(
            "flood", "staff_chat", 3, case_ref="K7FQ-3QXM-9PTA", detail="reports:12"
        )
        await tx.add_delivery("flood", "staff_chat", 3, detail="messages")
    reports, messages = await store.due_deliveries("9999")
    assert "12 reports" in (await desk.render([reports])).html
    assert "K7FQ-3QXM-9PTA" in (await desk.render([reports])).html
    text = (await desk.render([messages])).html
    assert "very many messages" in text and "latest case" not in text
