"""The on-call queue over Telegram: the real bot process, a rota of three, short timers.

Asha is on call, Ben is her backup, Cat is on the team. Timers are seconds, not minutes.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sqlite3
import sys
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.storage.sqlite import DB_NAME
from tests.e2e.conftest import STAFF_CHAT_ID, BotProcess
from tests.e2e.test_reporting import REF, answer_everything, begin, buttons
from tests.emulator import BotApiEmulator, SimGroup, SimUser, message_text

ASHA, BEN, CAT = 5001, 5002, 5003
ROTA_ENV = {
    "SAFEGUARD_STAFF__MEMBERS": json.dumps([ASHA, BEN, CAT]),
    "SAFEGUARD_ROTA__PEOPLE": json.dumps({"Asha": ASHA, "Ben": BEN, "Cat": CAT}),
    "SAFEGUARD_ROTA__SHIFTS": json.dumps(
        [
            {
                "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                "start": "00:00",
                "end": "00:00",
                "primary": "Asha",
                "backup": "Ben",
            }
        ]
    ),
    "SAFEGUARD_ESCALATION__ALERT_TEXT": "full",
}
FAST_TIMERS = {
    "SAFEGUARD_ESCALATION__IMMEDIATE__ACK_TIMEOUT_SECONDS": "2",
    "SAFEGUARD_ESCALATION__IMMEDIATE__EVERYONE_AFTER_SECONDS": "4",
    "SAFEGUARD_ESCALATION__IMMEDIATE__REPEAT_EVERY_SECONDS": "3",
}
SLOW_TIMERS = {
    "SAFEGUARD_ESCALATION__IMMEDIATE__ACK_TIMEOUT_SECONDS": "3600",
    "SAFEGUARD_ESCALATION__IMMEDIATE__EVERYONE_AFTER_SECONDS": "7200",
    "SAFEGUARD_ESCALATION__IMMEDIATE__REPEAT_EVERY_SECONDS": "7200",
}
DANGER = "please help hes outside my house rn and wont go away"


class Team:
    def __init__(self, emulator: BotApiEmulator, chat: SimGroup) -> None:
        self.chat = chat
        self.asha = emulator.user(ASHA, "Asha")
        self.ben = emulator.user(BEN, "Ben")
        self.cat = emulator.user(CAT, "Cat")

    async def start_private_chats(self) -> None:
        """Staff must press Start once before the bot can message them directly."""
        for member in (self.asha, self.ben, self.cat):
            await member.send_text("/start")
            await member.wait_for_bot_message(contains="Who is this about?")

    def alerts(self, user: SimUser | SimGroup, ref: str) -> list[dict]:
        return [
            m for m in user.bot_messages() if ref in message_text(m) and "alert" in message_text(m)
        ]


async def start_bot(
    emulator: BotApiEmulator, data_dir: Path, tmp_path: Path, **env: str
) -> BotProcess:
    process = BotProcess(emulator, data_dir, tmp_path)
    process.env_overrides.update(ROTA_ENV | env)
    await process.start()
    return process


@pytest.fixture
async def team(emulator: BotApiEmulator, staff_chat: SimGroup) -> Team:
    return Team(emulator, staff_chat)


async def running(
    emulator: BotApiEmulator, data_dir: Path, tmp_path: Path, timers: dict[str, str]
) -> AsyncIterator[BotProcess]:
    process = await start_bot(emulator, data_dir, tmp_path, **timers)
    yield process
    assert await process.stop() == 0, process.log()
    assert "Traceback" not in process.log(), process.log()


@pytest.fixture
async def fast_bot(
    emulator: BotApiEmulator, team: Team, data_dir: Path, tmp_path: Path
) -> AsyncIterator[BotProcess]:
    async for process in running(emulator, data_dir, tmp_path, FAST_TIMERS):
        yield process


@pytest.fixture
async def slow_bot(
    emulator: BotApiEmulator, team: Team, data_dir: Path, tmp_path: Path
) -> AsyncIterator[BotProcess]:
    async for process in running(emulator, data_dir, tmp_path, SLOW_TIMERS):
        yield process


async def raise_alarm(user: SimUser) -> str:
    await user.send_text(DANGER)
    signposting = await user.wait_for_bot_message(contains="999")
    found = REF.search(message_text(signposting))
    assert found, message_text(signposting)
    return found.group(0)


def no_reporter_identity(messages: list[dict], user: SimUser) -> None:
    needles = [str(user.id), user.user["first_name"], user.user.get("username") or "@@"]
    for message in messages:
        for needle in needles:
            assert needle not in message_text(message), needle


async def test_nobody_acknowledges_so_it_climbs_to_backup_then_everyone_and_repeats(
    emulator: BotApiEmulator, fast_bot: BotProcess, team: Team
) -> None:
    await team.start_private_chats()
    reporter = emulator.user(3001, "Dee", username="dee_secret")
    ref = await raise_alarm(reporter)

    # Step 0: the staff chat and the person on call, with the words (alert_text = "full").
    group_alert = await team.chat.wait_for_bot_message(contains=ref)
    asha_alert = await team.asha.wait_for_bot_message(contains=ref)
    assert "outside my house" in message_text(asha_alert)
    assert buttons(asha_alert) == ["✋ Acknowledge", "👤 Take case"]
    # Step 1 after 2 s: the backup. Step 2 after 4 s: everyone, the group again.
    ben_alert = await team.ben.wait_for_bot_message(contains=ref, timeout=6)
    assert "Nobody has acknowledged" in message_text(ben_alert)
    await team.cat.wait_for_bot_message(contains=ref, timeout=6)
    # Step 3 after 7 s: the repeat reaches the group a third time.
    for _ in range(100):
        if len(team.alerts(team.chat, ref)) >= 3:
            break
        await asyncio.sleep(0.1)
    assert len(team.alerts(team.chat, ref)) >= 3

    # Ben acknowledges from his private chat: the paging stops for everyone.
    query = await team.ben.press("✋ Acknowledge", ben_alert)
    await team.ben.wait_for_answer(query)
    await team.chat.wait_for_edit(group_alert["message_id"], contains="Acknowledged by Ben")
    await team.asha.wait_for_edit(asha_alert["message_id"], contains="Acknowledged by Ben")
    seen = await reporter.wait_for_bot_message(contains="has now seen your message")
    assert ref in message_text(seen)
    count = len(team.chat.bot_messages()) + len(team.asha.bot_messages())
    await asyncio.sleep(4)  # longer than a repeat
    assert len(team.chat.bot_messages()) + len(team.asha.bot_messages()) == count
    no_reporter_identity(
        team.chat.bot_messages() + team.asha.bot_messages() + team.ben.bot_messages(), reporter
    )


async def test_a_restart_during_a_pending_timer_fires_it_once(
    emulator: BotApiEmulator, team: Team, data_dir: Path, tmp_path: Path
) -> None:
    process = await start_bot(
        emulator,
        data_dir,
        tmp_path,
        SAFEGUARD_ESCALATION__IMMEDIATE__ACK_TIMEOUT_SECONDS="3",
        SAFEGUARD_ESCALATION__IMMEDIATE__EVERYONE_AFTER_SECONDS="3600",
        SAFEGUARD_ESCALATION__IMMEDIATE__REPEAT_EVERY_SECONDS="3600",
    )
    try:
        await team.start_private_chats()
        ref = await raise_alarm(emulator.user(3002, "Eli"))
        await team.asha.wait_for_bot_message(contains=ref)
        await team.chat.wait_for_bot_message(contains=ref)
        assert await process.stop() == 0
        await asyncio.sleep(1)
        await process.start()
        await team.ben.wait_for_bot_message(contains=ref, timeout=8)
        await asyncio.sleep(2)
        assert len(team.alerts(team.ben, ref)) == 1
        assert len(team.alerts(team.chat, ref)) == 1  # step 0 was not repeated
        assert len(team.alerts(team.asha, ref)) == 1
    finally:
        await process.stop()


async def test_kill_9_after_the_alert_is_written_but_before_it_is_sent(
    emulator: BotApiEmulator, team: Team, data_dir: Path, tmp_path: Path
) -> None:
    process = await start_bot(emulator, data_dir, tmp_path, **SLOW_TIMERS)
    try:
        await team.start_private_chats()
        # Telegram fails every alert until the process is killed.
        emulator.fail_next("sendMessage", status=500, count=10_000, chat_id=STAFF_CHAT_ID)
        emulator.fail_next("sendMessage", status=500, count=10_000, chat_id=ASHA)
        ref = await raise_alarm(emulator.user(3003, "Fay"))  # the alert is on disk now
        await process.kill()
        emulator._faults.clear()
        await process.start()
        await team.chat.wait_for_bot_message(contains=ref, timeout=10)
        await team.asha.wait_for_bot_message(contains=ref, timeout=10)
        await asyncio.sleep(2)
        assert len(team.alerts(team.chat, ref)) == 1
        assert len(team.alerts(team.asha, ref)) == 1
    finally:
        await process.stop()


async def test_throttling_and_errors_on_the_staff_chat_delay_but_never_lose_or_double(
    emulator: BotApiEmulator, slow_bot: BotProcess, team: Team
) -> None:
    await team.start_private_chats()
    emulator.fail_next("sendMessage", status=429, retry_after=1, chat_id=STAFF_CHAT_ID)
    emulator.fail_next("sendMessage", status=500, count=2, chat_id=STAFF_CHAT_ID)
    refs = [await raise_alarm(emulator.user(3100 + n, f"R{n}")) for n in range(3)]
    for ref in refs:
        await team.asha.wait_for_bot_message(contains=ref)  # the person on call is not held up
    for ref in refs:
        await team.chat.wait_for_bot_message(contains=ref, timeout=15)
    await asyncio.sleep(1)
    for ref in refs:
        assert len(team.alerts(team.chat, ref)) == 1, ref


async def test_staff_work_a_case_to_its_end_without_learning_who_reported_it(
    emulator: BotApiEmulator, slow_bot: BotProcess, team: Team
) -> None:
    await team.start_private_chats()
    reporter = emulator.user(3004, "Gus", username="gus_secret")
    await begin(reporter, "young_person")
    ref = await answer_everything(
        reporter, texts={"What is happening": "a man keeps messaging my friend"}
    )
    chat, asha = team.chat, team.asha

    await chat.send_text(asha, "/queue")
    queue = await chat.wait_for_bot_message(contains="Open cases")
    assert ref in message_text(queue)

    await chat.send_text(asha, f"/reply {ref} Thank you for telling us. Is your friend safe today?")
    got = await reporter.wait_for_bot_message(contains="Is your friend safe today?")
    assert "A message from the safeguarding team" in message_text(got)
    assert "Asha" not in message_text(got)

    # The reporter answers: it reaches the staff chat as new text from the bot, never a forward.
    await reporter.send_text("yes she is at home now")
    followup = await chat.wait_for_bot_message(contains="New message from the reporter")
    assert ref in message_text(followup)
    assert "yes she is at home now" in message_text(followup)
    assert emulator.requests_for("forwardMessage") == []
    assert emulator.requests_for("copyMessage") == []

    await chat.send_text(asha, f"/note {ref} spoke to school DSL")
    await chat.wait_for_bot_message(contains=f"Note added to {ref}")
    await chat.send_text(asha, f"/case {ref}")
    case = await chat.wait_for_bot_message(contains=f"Case {ref}")
    for expected in ("replied to the reporter", "added a note", "safeguard reports show"):
        assert expected in message_text(case), expected
    assert "spoke to school DSL" not in message_text(case)  # notes are sealed to the staff key

    await chat.send_text(asha, f"/close {ref} bogus")
    await chat.wait_for_bot_message(contains="Outcomes:")
    await chat.send_text(asha, f"/close {ref} social_care")
    await chat.wait_for_bot_message(contains="referred to children's social care")
    await chat.send_text(asha, "/queue")
    await chat.wait_for_bot_message(contains="No open cases")
    await chat.send_text(asha, f"/reopen {ref}")
    await chat.wait_for_bot_message(contains="is open again")

    # The pager: Cat takes it, then hands it to Ben.
    await chat.send_text(team.cat, "/oncall")
    await chat.wait_for_bot_message(contains="Cat has the pager")
    await chat.send_text(team.cat, "/handover ben")
    await chat.wait_for_bot_message(contains="Ben has the pager")
    ref2 = await raise_alarm(emulator.user(3005, "Hal"))
    await team.ben.wait_for_bot_message(contains=ref2)
    assert not team.alerts(asha, ref2)

    no_reporter_identity(chat.bot_messages() + asha.bot_messages(), reporter)


async def test_strangers_get_nothing_and_forged_buttons_are_refused(
    emulator: BotApiEmulator, slow_bot: BotProcess, team: Team
) -> None:
    await team.start_private_chats()
    ref = await raise_alarm(emulator.user(3006, "Ivy"))
    alert = await team.chat.wait_for_bot_message(contains=ref)
    stranger = emulator.user(9997, "Mallory")

    await team.chat.send_text(stranger, "/queue")
    await team.chat.send_text(stranger, f"/case {ref}")
    await asyncio.sleep(0.5)
    assert not [m for m in team.chat.bot_messages() if "Open cases" in message_text(m)]
    await stranger.send_text("/queue")  # in private: just words for the reporter flow
    reply = await stranger.wait_for_bot_message()
    assert "Open cases" not in message_text(reply)
    query = await team.chat.press(stranger, "👤 Take case", alert)
    assert "Only members" in (await stranger.wait_for_answer(query)).get("text", "")

    # A member with a modified client names an alert that is not on this message.
    forged = team.chat.state
    query = emulator.issue_callback_query(
        forged, team.cat.user, alert["message_id"], "alert:ack:999"
    )
    assert "not valid" in (await team.cat.wait_for_answer(query)).get("text", "")
    query = emulator.issue_callback_query(forged, team.cat.user, alert["message_id"], "junk")
    assert "not valid" in (await team.cat.wait_for_answer(query)).get("text", "")

    # Take case from the group: acknowledged and taken; a second press is told who has it.
    query = await team.chat.press(team.cat, "👤 Take case", alert)
    assert "You have case" in (await team.cat.wait_for_answer(query)).get("text", "")
    edited = await team.chat.wait_for_edit(alert["message_id"], contains="Case taken by Cat")
    assert buttons(edited) == []


async def test_followup_after_clearing_the_chat_shows_replies_and_adds_to_the_case(
    emulator: BotApiEmulator, slow_bot: BotProcess, team: Team
) -> None:
    reporter = emulator.user(3007, "Jo")
    await begin(reporter, "worried_adult")
    ref = await answer_everything(reporter)
    await team.chat.send_text(team.asha, f"/reply {ref} Can you tell us which school?")
    await reporter.wait_for_bot_message(contains="which school")
    await reporter.send_text("/exit")
    await asyncio.sleep(1)
    assert not [m for m in reporter.history() if "which school" in message_text(m)]

    await reporter.send_text(f"/followup {ref.lower()}")
    again = await reporter.wait_for_bot_message(contains="which school")
    assert "A message from the safeguarding team" in message_text(again)
    await reporter.send_text("it is Batley Grammar")
    await team.chat.wait_for_bot_message(contains="New message from the reporter")

    await reporter.send_text("/followup ZZZZ-ZZZZ-ZZZZ")
    await reporter.wait_for_bot_message(contains="can't find an open report")


async def test_health_check_by_cli_and_http(
    emulator: BotApiEmulator, team: Team, data_dir: Path, tmp_path: Path
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = await start_bot(emulator, data_dir, tmp_path, SAFEGUARD_HEALTH__HTTP_PORT=str(port))
    try:
        await asyncio.sleep(1)

        def fetch() -> tuple[int, dict]:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                return r.status, json.loads(r.read())

        status, body = await asyncio.to_thread(fetch)
        assert status == 200 and body["ok"] is True
        code, out = await health_cli(process.env())
        assert code == 0, out
        assert json.loads(out)["ok"] is True
    finally:
        await process.stop()
    # Stopped: the heartbeat goes stale (threshold shortened for the test).
    await asyncio.sleep(2)
    code, out = await health_cli({**process.env(), "SAFEGUARD_HEALTH__STALE_AFTER_SECONDS": "1"})
    assert code == 1
    assert "delivery worker" in json.loads(out)["problems"][0]


async def health_cli(env: dict[str, str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "health",
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def test_an_update_is_not_lost_to_kill_9_before_it_is_committed(
    emulator: BotApiEmulator, team: Team, data_dir: Path, tmp_path: Path
) -> None:
    process = await start_bot(emulator, data_dir, tmp_path, **SLOW_TIMERS)
    try:
        reporter = emulator.user(3010, "Kit")
        await reporter.send_text("/start")
        await reporter.wait_for_bot_message(contains="Who is this about?")
        # Given the database is held by another writer, so the turn cannot commit yet
        blocker = sqlite3.connect(data_dir / DB_NAME, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            sent = await reporter.send_text(DANGER)
            await asyncio.sleep(1.5)  # the bot has the update and is waiting on the database
            assert not [m for m in reporter.bot_messages() if m["message_id"] > sent["message_id"]]
            # When the process is killed before the update was handled
            await process.kill()
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        # Then Telegram still has it: after the restart it is handled and the alert goes out
        await process.start()
        signposting = await reporter.wait_for_bot_message(contains="Your reference is", timeout=10)
        ref = REF.search(message_text(signposting))
        assert ref is not None
        await team.chat.wait_for_bot_message(contains=ref.group(0), timeout=10)
    finally:
        await process.stop()
