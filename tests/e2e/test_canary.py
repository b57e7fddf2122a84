"""The whole product, then a search of everything it left behind.

Given a reporter who plants unique strings in every kind of message (the words that raise an
alert, answers, a follow-up), and staff who plant their own in a reply and a note,
when the conversation, the escalation, the staff reply and note, a restart and a backup have
all happened, then no planted string, no Telegram id, no username and no name appears in any
file of the data dir (database, WAL, keys, backups) or in the logs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import TEST_PASSPHRASE
from tests.e2e.conftest import STAFF_CHAT_ID, BotProcess
from tests.e2e.test_reporting import REF, answer_everything, begin, next_prompt
from tests.emulator import BotApiEmulator, SimGroup, message_text

STAFF_ID = 7_700_123_456  # long, so it cannot turn up by chance in random bytes
REPORTER_ID = 734_251_998_811
CANARIES = {
    "trigger": "canary-trigger-Quillfeather",
    "answer": "canary-answer-tangerine-lighthouse",
    "place": "canary-place-Gloopshire",
    "followup": "canary-followup-Marrowvale",
    "reply": "canary-staffreply-Brindlecombe",
    "note": "canary-staffnote-Oxwhistle",
}


def cli(process: BotProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = process.env() | {"SAFEGUARD_KEY_PASSPHRASE": TEST_PASSPHRASE}
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        cwd=process.workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_nothing_planted_or_identifying_is_left_anywhere(
    emulator: BotApiEmulator, data_dir: Path, tmp_path: Path
) -> None:
    staff_chat: SimGroup = emulator.group(STAFF_CHAT_ID, "Safeguarding on-call")
    staff = emulator.user(STAFF_ID, "Asha", username="asha_on_call")
    await emulator.add_bot_to_group(staff_chat, staff)
    bot = BotProcess(emulator, data_dir, tmp_path)
    bot.env_overrides.update(
        {
            "SAFEGUARD_STAFF__MEMBERS": json.dumps([STAFF_ID]),
            "SAFEGUARD_ROTA__PEOPLE": json.dumps({"Asha": STAFF_ID}),
            "SAFEGUARD_ESCALATION__ALERT_TEXT": "full",  # the words travel (sealed) too
        }
    )
    await bot.start()
    try:
        reporter = emulator.user(REPORTER_ID, "Wrenna", username="wren_canary_name")

        # Given: an alert raised by the reporter's own words, then a whole report.
        await begin(reporter, "young_person")
        await next_prompt(reporter)
        await reporter.send_text(f"{CANARIES['trigger']} he is outside my house rn and wont go")
        signposting = await reporter.wait_for_bot_message(contains="999")
        found = REF.search(message_text(signposting))
        assert found
        alert = await staff_chat.wait_for_bot_message(contains="alert")
        assert CANARIES["trigger"] in message_text(alert)  # "full": staff see the words
        ref = await answer_everything(
            reporter,
            {"anything else": CANARIES["answer"], "Where does it happen": CANARIES["place"]},
        )

        # When: staff reply and note, the reporter follows up, and the bot restarts.
        await staff_chat.send_text(staff, f"/reply {ref} {CANARIES['reply']} are you safe?")
        await reporter.wait_for_bot_message(contains=CANARIES["reply"])
        await staff_chat.send_text(staff, f"/note {ref} {CANARIES['note']}")
        await staff_chat.wait_for_bot_message(contains="Note added")
        await reporter.send_text(f"{CANARIES['followup']} yes safe now")
        await staff_chat.wait_for_bot_message(contains="New message from the reporter")
        assert await bot.stop() == 0
        await bot.start()
        await staff_chat.send_text(staff, "/queue")
        await staff_chat.wait_for_bot_message(contains=ref)
        assert await bot.stop() == 0
    finally:
        await bot.stop()  # also when an assertion failed: never leave the bot running

    # ... and the operator backs up, verifies the audit trail, and reads the case.
    backup = cli(bot, "backup")
    assert backup.returncode == 0, backup.stderr
    verify = cli(bot, "audit", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    shown = cli(bot, "reports", "show", ref, "--json")
    assert shown.returncode == 0, shown.stderr
    for planted in ("trigger", "answer", "place", "followup", "reply", "note"):
        assert CANARIES[planted] in shown.stdout, planted

    # Then: the staff key really opens it all, and nothing is left in the clear anywhere.
    needles = [
        *CANARIES.values(),
        str(REPORTER_ID),
        "wren_canary_name",
        "Wrenna",
        str(STAFF_ID),
        "asha_on_call",
    ]
    files = [p for p in data_dir.rglob("*") if p.is_file()] + [bot.log_path]
    assert any(p.suffix == ".sqlite3" and "backups" in p.parts for p in files), files
    for path in files:
        blob = path.read_bytes()
        for needle in needles:
            assert needle.encode() not in blob, f"{needle!r} found in {path}"
    for output in (backup, verify):
        for needle in needles:
            assert needle not in output.stdout + output.stderr, needle
    for message in staff_chat.bot_messages():
        for needle in (str(REPORTER_ID), "wren_canary_name", "Wrenna"):
            assert needle not in message_text(message), needle
    # The logs name no staff member's Telegram id either, and every file is owner-only.
    for path in data_dir.rglob("*"):
        mode = path.stat().st_mode & 0o777
        assert mode & 0o077 == 0, f"{path} is {oct(mode)}"
    assert os.stat(data_dir).st_mode & 0o077 == 0
