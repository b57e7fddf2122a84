"""The staff desk without Telegram: what staff see of a case, and what their actions record."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from bot.config import EscalationSettings, LevelPolicy, Settings, load_settings
from bot.crypto import BotCrypto
from bot.dialogue.content import Content
from bot.escalation.desk import StaffDesk
from bot.storage.sqlite import DB_NAME, SqliteStore, _migrations, _split_sql
from tests.conftest import ROOT, make_paging, signed_store, staff_key

REF = "K7FQ-3QXM-9PTA"
OTHER = "AAAA-BBBB-CCCC"


@pytest.fixture
async def store(data_dir: Path) -> AsyncIterator[SqliteStore]:
    async with signed_store(data_dir) as s:
        yield s


def desk_for(store: SqliteStore, data_dir: Path, unlocked: bool = False) -> StaffDesk:
    crypto = BotCrypto.load(data_dir)
    key = staff_key(data_dir) if unlocked else None
    return StaffDesk(store, crypto, Content.load(ROOT / "config", "en"), make_paging(crypto), key)


async def a_case(desk: StaffDesk, ref: str = REF, level: str = "immediate") -> int:
    report = b'{"answers": [{"label": "What is happening", "text": "canary-desk-77"}]}'
    async with desk.store.transaction() as tx:
        await tx.ensure_case(ref, "pseudonym", "young_person")
        await tx.raise_case_level(ref, level)
        await tx.add_record(ref, "report", desk.crypto.seal_report(ref, report))
        return await tx.add_escalation(ref, level, ["rule:danger_now"])


async def test_case_view_without_the_key_says_how_to_read_it(
    store: SqliteStore, data_dir: Path
) -> None:
    desk = desk_for(store, data_dir)
    await a_case(desk)
    await desk.note(REF, "Asha", "rang the school canary-note-12")
    text = await desk.case_text(REF)
    assert f"Case {REF}" in text and "IMMEDIATE" in text
    assert "not acknowledged" in text and "added a note" in text
    assert "safeguard reports show" in text
    assert "canary" not in text  # nothing sealed is shown without the staff key


async def test_case_view_with_the_key_unlocked_shows_content_and_notes(
    store: SqliteStore, data_dir: Path
) -> None:
    desk = desk_for(store, data_dir, unlocked=True)
    await a_case(desk)
    await desk.note(REF, "Asha", "rang the school canary-note-12")
    text = await desk.case_text(REF)
    assert "canary-desk-77" in text and "canary-note-12" in text


async def test_queue_puts_unacknowledged_and_urgent_first_and_leaves_closed_out(
    store: SqliteStore, data_dir: Path
) -> None:
    desk = desk_for(store, data_dir)
    await a_case(desk, OTHER, "high")
    escalation = await a_case(desk, REF, "immediate")
    await a_case(desk, "ZZZZ-ZZZZ-ZZZZ", "high")
    await desk.close("ZZZZ-ZZZZ-ZZZZ", "Asha", "duplicate")
    await desk.acknowledge(escalation, "Ben")
    text = await desk.queue_text()
    assert text.index(REF) < text.index(OTHER)  # immediate before high
    assert "ZZZZ-ZZZZ-ZZZZ" not in text
    assert "Open cases: 2" in text


async def test_close_stops_paging_and_reopen_brings_the_case_back(
    store: SqliteStore, data_dir: Path
) -> None:
    desk = desk_for(store, data_dir)
    await a_case(desk)
    assert (await desk.close(REF, "Asha", "police")).done
    assert not (await desk.close(REF, "Asha", "police")).done
    assert await store.due_escalations("9999") == []
    assert (await desk.reopen(REF, "Ben")).done
    actions = [e.action for e in await store.case_events(REF)]
    assert actions == ["acknowledged", "closed", "reopened"]


async def test_replies_are_kept_for_the_reporter_only_while_the_case_is_open(
    store: SqliteStore, data_dir: Path
) -> None:
    desk = desk_for(store, data_dir)
    await a_case(desk)
    await desk.record_reply(REF, "Asha", "Are you safe?")
    async with store.transaction() as tx:
        await tx.set_reply_handle(REF, desk.crypto.seal_reply_handle(REF, 424242))
    assert await desk.replies_for_reporter(REF) == ["Are you safe?"]
    assert await desk.reply_address(REF) == 424242
    await desk.close(REF, "Asha", "advice")
    assert await desk.replies_for_reporter(REF) == []
    # Closing erases the way to reach the reporter: nobody can message them after.
    assert await store.reply_handle(REF) is None
    assert await desk.reply_address(REF) is None


async def test_taking_a_case_acknowledges_it_and_a_second_taker_is_told_who_has_it(
    store: SqliteStore, data_dir: Path
) -> None:
    desk = desk_for(store, data_dir)
    await a_case(desk)
    first = await desk.take(REF, "Asha")
    assert first.done and first.acknowledged
    second = await desk.take(REF, "Ben")
    assert not second.done and second.by == "Asha"


async def test_a_strangers_attempt_is_recorded_without_who(
    store: SqliteStore, data_dir: Path
) -> None:
    desk = desk_for(store, data_dir)
    await a_case(desk)
    await desk.refused("case", REF)
    (event,) = await store.case_events(REF)
    assert (event.actor, event.action, event.detail) == ("not_staff", "refused", "case")


async def test_a_version_1_database_keeps_its_undelivered_alert(tmp_path: Path) -> None:
    # Given a database from before the on-call queue, with an alert not yet delivered
    with sqlite3.connect(tmp_path / DB_NAME) as db:
        version, script = _migrations()[0]
        for statement in _split_sql(script):
            db.execute(statement)
        db.execute(f"PRAGMA user_version = {version}")
        db.execute("INSERT INTO cases (ref, reporter, created_at) VALUES (?, 'p', '2026')", (REF,))
        db.execute(
            "INSERT INTO escalations (case_ref, level, reasons, created_at) "
            "VALUES (?, 'immediate', '[]', '2026-01-01T00:00:00.000+00:00')",
            (REF,),
        )
        db.execute(
            "INSERT INTO outbox (escalation_id, created_at, next_attempt_at) VALUES "
            "(1, '2026-01-01T00:00:00.000+00:00', '2026-01-01T00:00:00.000+00:00')"
        )
    # When the new version opens it
    async with SqliteStore(tmp_path) as store:
        due = await store.due_deliveries("9999")
        timers = await store.due_escalations("9999")
    # Then the alert is still to be delivered to the staff chat, and paging carries on
    assert [(d.recipient, d.case_ref, d.priority) for d in due] == [("staff_chat", REF, 0)]
    assert [e.step for e in timers] == [1]


def test_the_example_settings_load() -> None:
    settings = load_settings(ROOT / "config" / "settings.example.toml")
    assert settings.rota.people and settings.escalation.immediate.everyone_after_seconds == 300


def test_settings_refuse_a_policy_that_cannot_work() -> None:
    with pytest.raises(ValidationError, match="longer than ack_timeout"):
        LevelPolicy(ack_timeout_seconds=300, everyone_after_seconds=60)
    with pytest.raises(ValidationError, match=r"routine\.notify"):
        EscalationSettings(routine=LevelPolicy(notify="on_call", ack_timeout_seconds=60))
    with pytest.raises(ValidationError, match=r"not in staff\.members"):
        Settings(rota={"people": {"Asha": 1}}, staff={"members": [2]})
