"""The reporting service over a real SQLite store and real keys, without Telegram."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pytest

from bot.crypto import BotCrypto
from bot.dialogue.content import Content
from bot.dialogue.engine import Button, Inbound, Reply
from bot.dialogue.service import Origin, ReportingService
from bot.storage.sqlite import DB_NAME, SqliteStore
from nlu.pipeline import Nlu
from tests.conftest import make_paging, open_record, signed_store

REPORTER = 7_123_456_789
CANARY = "canary-Zq81-violet-umbrella"


class CollectingMessenger:
    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.cleared: list[int] = []
        self.removed = 0
        self._id = 100

    async def send(self, reply: Reply) -> list[int]:
        self.replies.append(reply)
        self._id += 1
        return [self._id]

    async def remove_inbound(self) -> None:
        self.removed += 1

    async def clear(self, message_ids: Sequence[int]) -> None:
        self.cleared.extend(message_ids)

    def buttons(self) -> list[Button]:
        last = [r for r in self.replies if r.buttons][-1]
        return [b for row in last.buttons for b in row]

    def button(self, label: str) -> Inbound:
        b = next(b for b in self.buttons() if b.label == label)
        return Inbound("button", action=b.action, step=b.step, value=b.value, turn=b.turn)

    def text(self) -> str:
        return "\n".join(r.html for r in self.replies)


@pytest.fixture
def service(content: Content, store: SqliteStore, data_dir: Path, nlu: Nlu) -> ReportingService:
    return _service(content, store, data_dir, nlu)


def _service(content: Content, store: SqliteStore, data_dir: Path, nlu: Nlu) -> ReportingService:
    crypto = BotCrypto.load(data_dir)
    return ReportingService(content, store, crypto, nlu, make_paging(crypto))


class Reporter:
    def __init__(self, service: ReportingService) -> None:
        self.service = service
        self.m = CollectingMessenger()
        self.update_id = 0

    async def do(self, inbound: Inbound, update_id: int | None = None) -> None:
        self.update_id += 1
        origin = Origin(REPORTER, update_id=update_id or self.update_id, reply_address=REPORTER)
        await self.service.handle(origin, inbound, self.m)

    async def begin(self, content: Content) -> None:
        """/start, then "about me" as a young person."""
        await self.do(Inbound("start"))
        await self.press(content.wording.audiences["young_person"])

    async def say(self, text: str) -> None:
        await self.do(Inbound("text", text=text))

    async def press(self, label: str) -> None:
        await self.do(self.m.button(label))


async def answer_up_to_send(r: Reporter, content: Content, what: str) -> None:
    await r.begin(content)
    await r.say(what)
    for _ in range(20):
        labels = [b.label for b in r.m.buttons()]
        if "✅ Send" in labels:
            break
        if "No" in labels:
            await r.press("No")
        elif "Yes, they can reply" in labels:
            await r.press("Yes, they can reply")
        elif "Skip" in labels:
            await r.press("Skip")


async def full_report(r: Reporter, content: Content) -> str:
    await answer_up_to_send(r, content, f"{CANARY} keeps messaging me")
    await r.press("✅ Send")
    case = (await r.service.store.list_cases())[-1]
    return case.ref


async def test_report_is_sealed_and_readable_only_with_the_staff_key(
    service: ReportingService, content: Content, data_dir: Path
) -> None:
    r = Reporter(service)
    ref = await full_report(r, content)
    assert ref in r.m.text()
    records = await service.store.records_for(ref)
    assert [rec.kind for rec in records] == ["report"]
    assert CANARY.encode() not in records[0].sealed
    opened = json.loads(await open_record(data_dir, service.store, ref, records[0].sealed))
    assert any(CANARY in (a.get("text") or "") for a in opened["answers"])
    case = await service.store.get_case(ref)
    assert case.can_reply and case.submitted_at is not None


async def test_no_plaintext_or_telegram_id_anywhere_in_the_data_dir(
    service: ReportingService, content: Content, data_dir: Path, store: SqliteStore
) -> None:
    r = Reporter(service)
    await r.begin(content)
    await r.say(f"{CANARY} he is outside my house right now")  # alert + draft
    await r.press("Skip")
    await store.close()
    await store.open()
    for path in data_dir.rglob("*"):
        if path.is_file():
            blob = path.read_bytes()
            assert CANARY.encode() not in blob, path
            assert str(REPORTER).encode() not in blob, path


async def test_duplicate_update_is_not_recorded_twice(
    service: ReportingService, content: Content
) -> None:
    r = Reporter(service)
    await r.do(Inbound("start"), update_id=1)
    await r.do(r.m.button(content.wording.audiences["young_person"]), update_id=2)
    await r.do(Inbound("text", text="first answer"), update_id=3)
    replies_before = len(r.m.replies)
    await r.do(Inbound("text", text="first answer"), update_id=3)
    assert len(r.m.replies) == replies_before  # nothing said, nothing recorded


async def test_a_restart_resumes_where_the_reporter_was(
    content: Content, data_dir: Path, nlu: Nlu
) -> None:
    async with signed_store(data_dir) as store:
        first = _service(content, store, data_dir, nlu)
        r = Reporter(first)
        await r.do(Inbound("start"))
        await r.press(content.wording.audiences["worried_adult"])
        await r.say("my neighbour's child")
    async with signed_store(data_dir) as store:
        second = _service(content, store, data_dir, nlu)
        r.service = second
        r.m.replies.clear()
        await r.do(Inbound("start"))
        assert content.wording.questions["who_other"]["default"] in r.m.text()


async def test_danger_phrase_writes_alert_and_its_timer_before_replying(
    service: ReportingService, content: Content, data_dir: Path
) -> None:
    r = Reporter(service)
    await r.say("please help hes outside my house rn")
    assert r.m.replies[0].html.count("999") >= 1  # signposting comes first
    cases = await service.store.list_cases()
    assert len(cases) == 1 and cases[0].level == "immediate"
    # Step 0 was paged in the same transaction: its message to the staff chat is on disk,
    # and the timer for the next step is set.
    (timer,) = await service.store.due_escalations("9999")
    assert timer.level == "immediate" and timer.step == 1 and timer.next_step_at
    assert timer.trigger_sealed is None  # alert_text is "summary" unless the team chose "full"
    (delivery,) = await service.store.due_deliveries("9999")
    assert delivery.recipient == "staff_chat" and delivery.case_ref == cases[0].ref
    (alert,) = await service.store.records_for(cases[0].ref)
    body = json.loads(await open_record(data_dir, service.store, cases[0].ref, alert.sealed))
    assert body["trigger"] == "please help hes outside my house rn"


async def test_quick_exit_erases_the_draft(service: ReportingService, content: Content) -> None:
    r = Reporter(service)
    await r.begin(content)
    await r.say("something private")
    await r.do(Inbound("exit"))
    pseudonym = service.crypto.pseudonym_for(REPORTER)
    assert await service.store.load_draft(pseudonym) is None
    assert len(r.m.cleared) >= 3  # the bot's messages and the reporter's


async def test_locked_database_gets_a_clear_answer_and_loses_nothing_saved(
    service: ReportingService, content: Content, data_dir: Path
) -> None:
    r = Reporter(service)
    await r.begin(content)
    # Given another writer holds the database past the busy timeout,
    blocker = sqlite3.connect(data_dir / DB_NAME)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        r.m.replies.clear()
        # When the reporter says they are in danger,
        turn = asyncio.create_task(r.say("he is outside my house now"))
        for _ in range(100):
            if r.m.replies:
                break
            await asyncio.sleep(0.05)
        # Then they are told at once it is not saved yet, with the 999 line, and need not resend
        assert "try again myself" in r.m.text() and "999" in r.m.text()
        assert not turn.done()
    finally:
        blocker.rollback()
        blocker.close()
    # and once the lock goes, their message lands by itself: one case, one alert.
    await asyncio.wait_for(turn, 10)
    cases = await service.store.list_cases()
    assert len(cases) == 1 and cases[0].level == "immediate"
    assert len(await service.store.escalations_for(cases[0].ref)) == 1


async def test_two_messages_at_once_do_not_race(
    service: ReportingService, content: Content
) -> None:
    r = Reporter(service)
    await r.begin(content)
    await asyncio.gather(
        r.do(Inbound("text", text="one"), update_id=50),
        r.do(Inbound("text", text="two"), update_id=51),
    )
    pseudonym = service.crypto.pseudonym_for(REPORTER)
    sealed = await service.store.load_draft(pseudonym)
    assert sealed is not None


async def test_writing_again_after_the_case_closed_lets_the_team_answer_again(
    service: ReportingService, content: Content
) -> None:
    # Given a report whose sender agreed to replies, and the team closed the case,
    r = Reporter(service)
    ref = await full_report(r, content)
    async with service.store.transaction() as tx:
        await tx.close_case(ref, "advice")
    assert await service.store.reply_handle(ref) is None
    # When they write again,
    await r.say("it started again tonight")
    # Then it is added to the case, and the team can reach them again.
    assert [rec.kind for rec in await service.store.records_for(ref)][-1] == "followup"
    assert await service.store.reply_handle(ref) is not None


async def test_an_update_saved_but_never_answered_is_answered_when_delivered_again(
    service: ReportingService, content: Content
) -> None:
    # Given a reporter whose urgent message was saved, and then the bot was killed before
    # its answer went out (the update is then delivered again by Telegram),
    r = Reporter(service)
    await r.begin(content)
    origin = Origin(REPORTER, update_id=77, reply_address=REPORTER)
    pseudonym = service.crypto.pseudonym_for(REPORTER)
    danger = Inbound("text", text="please help hes outside my house rn")
    assert await service._decide_and_store(pseudonym, origin, danger) is not None
    r.m.replies.clear()
    # When that update arrives again,
    await service.handle(origin, danger, r.m)
    # Then it is not treated as already answered: the numbers, and where they were.
    assert "999" in r.m.text() and r.m.buttons()
    cases = await service.store.list_cases()
    assert len(cases) == 1 and len(await service.store.escalations_for(cases[0].ref)) == 1
    # And a third delivery, now answered, is ignored.
    r.m.replies.clear()
    await service.handle(origin, danger, r.m)
    assert r.m.replies == []


async def test_buttons_said_again_after_a_restart_still_work(
    service: ReportingService, content: Content
) -> None:
    # Given a reporter's answer saved, then the bot killed before the next question went out,
    r = Reporter(service)
    await r.begin(content)
    await r.say("a man online keeps asking for pictures")
    pseudonym = service.crypto.pseudonym_for(REPORTER)
    origin = Origin(REPORTER, update_id=60, reply_address=REPORTER)
    button = r.m.button(next(b.label for b in r.m.buttons() if b.action == "option"))
    assert await service._decide_and_store(pseudonym, origin, button) is not None
    # When Telegram delivers that update again and the question is said again,
    r.m.replies.clear()
    await service.handle(origin, button, r.m)
    assert r.m.buttons()
    # Then pressing a button under it moves the report on, instead of "that button is from
    # earlier" (the question said again must carry the turn that was saved).
    option = next(b.label for b in r.m.buttons() if b.action in ("option", "skip"))
    press = r.m.button(option)
    r.m.replies.clear()
    await r.do(press)
    assert r.m.text() and content.wording.stale_button.split(".")[0] not in r.m.text()


async def test_a_lost_answer_to_an_alarm_is_made_good_by_their_next_message(
    service: ReportingService, content: Content
) -> None:
    # Given an urgent message saved (and Telegram told so), then the bot killed before the
    # answer with the 999 line went out, so Telegram will not deliver it again,
    r = Reporter(service)
    await r.begin(content)
    origin = Origin(REPORTER, update_id=90, reply_address=REPORTER)
    pseudonym = service.crypto.pseudonym_for(REPORTER)
    danger = Inbound("text", text="please help hes outside my house rn")
    assert await service._decide_and_store(pseudonym, origin, danger) is not None
    # When they write again,
    r.m.replies.clear()
    await r.do(Inbound("text", text="hello?"), update_id=91)
    # Then the numbers come first; and once answered, not again.
    assert "999" in r.m.replies[0].html
    r.m.replies.clear()
    await r.do(Inbound("text", text="he has gone now"), update_id=92)
    assert all("999" not in x.html for x in r.m.replies[:1])


class UnreachableMessenger(CollectingMessenger):
    """Telegram took none of the replies (resets or an outage longer than the retries)."""

    async def send(self, reply: Reply) -> list[int]:
        self.replies.append(reply)
        return []


async def test_an_answer_telegram_never_took_is_said_again_with_their_next_message(
    service: ReportingService, content: Content
) -> None:
    # Given a reporter whose urgent message was saved, but whose answer Telegram never took,
    r = Reporter(service)
    await r.begin(content)
    reachable = r.m
    r.m = UnreachableMessenger()
    danger = Origin(REPORTER, update_id=50, message_id=500, reply_address=REPORTER)
    await service.handle(danger, Inbound("text", text="please help hes outside my house rn"), r.m)
    assert "999" in r.m.text()  # it was tried
    # When Telegram is back and they write again,
    r.m = reachable
    r.m.replies.clear()
    await r.say("hello??")
    # Then the numbers and their case reference come first, sent urgently.
    ref = (await service.store.list_cases())[-1].ref
    first = r.m.replies[0]
    assert first.urgent and "999" in first.html and ref in first.html


async def test_a_lost_report_confirmation_gives_the_reference_again_with_their_next_message(
    service: ReportingService, content: Content
) -> None:
    # Given a reporter who pressed Send, whose report was saved, but whose confirmation with
    # the reference code Telegram never took,
    r = Reporter(service)
    await answer_up_to_send(r, content, "a man keeps messaging me")
    send = r.m.button("✅ Send")
    reachable = r.m
    r.m = UnreachableMessenger()
    await r.do(send)
    ref = (await service.store.list_cases())[-1].ref
    assert ref in r.m.text()  # it was tried
    # When Telegram is back and they start again (as someone left waiting does),
    r.m = reachable
    r.m.replies.clear()
    await r.do(Inbound("start"))
    # Then they are told the report was sent, with its reference, before anything else;
    assert ref in r.m.replies[0].html and "has been sent" in r.m.replies[0].html
    # and once that has reached them, not again.
    before = len(r.m.replies)
    await r.press(content.wording.audiences["young_person"])
    assert r.m.replies[before:] and all(ref not in x.html for x in r.m.replies[before:])
