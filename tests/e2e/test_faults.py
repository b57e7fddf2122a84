"""Fault injection against the real `safeguard run` process: damaged keys, a database held by
another writer, a long Telegram outage, `kill -9` under load, and Telegram requests that time
out or whose connection is reset.

Kept short for CI: a "long" outage is 20 seconds, the load is twenty people.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import json
import os
import random
import shutil
import sqlite3
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from bot.key_ceremonies import rotate_bot_secrets
from bot.storage.sqlite import DB_NAME, SqliteStore
from tests.e2e.conftest import STAFF_CHAT_ID
from tests.e2e.test_on_call import DANGER, SLOW_TIMERS, Team, start_bot
from tests.e2e.test_reporting import AUDIENCE_LABELS, REF, answer_everything, begin, buttons
from tests.emulator import BotApiEmulator, RecordedRequest, SimGroup, SimUser, message_text

# ----------------------------------------------------------------------------------------------
# 1. Missing or damaged keys: refuse to start, say which file and what to do, write nothing.
# ----------------------------------------------------------------------------------------------


def _rewrite_json(path: Path, change: Callable[[dict], None]) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _shorten_audit_key(doc: dict) -> None:
    doc["audit_key"] = doc["audit_key"][:-8] + "="


def _flip_public_key(doc: dict) -> None:
    raw = bytearray(base64.b64decode(doc["public_key"]))
    raw[0] ^= 0x01
    doc["public_key"] = base64.b64encode(bytes(raw)).decode()


def _second_generation_pepper_reused(doc: dict) -> None:
    newest = doc["generations"][-1]
    newest["draft_key"] = newest["reporter_pepper"]


def _swap_newest_draft_key(doc: dict) -> None:
    doc["generations"][-1]["draft_key"] = base64.b64encode(os.urandom(32)).decode()


KEY_FAULTS: dict[str, tuple[Callable[[Path], None], str]] = {
    "secrets missing": (lambda keys: (keys / "bot_secrets.json").unlink(), "bot_secrets.json"),
    "secrets truncated": (lambda keys: _truncate(keys / "bot_secrets.json"), "bot_secrets.json"),
    "secrets edited (a key cut short)": (
        lambda keys: _rewrite_json(keys / "bot_secrets.json", _shorten_audit_key),
        "bot_secrets.json",
    ),
    "secrets edited (a value pasted twice)": (
        lambda keys: _rewrite_json(keys / "bot_secrets.json", _second_generation_pepper_reused),
        "bot_secrets.json",
    ),
    "staff public key corrupted": (
        lambda keys: _rewrite_json(keys / "staff" / "lead.public.json", _flip_public_key),
        "lead.public.json",
    ),
    "staff public key truncated": (
        lambda keys: _truncate(keys / "staff" / "lead.public.json"),
        "lead.public.json",
    ),
    "keys dir missing": (lambda keys: shutil.rmtree(keys), "keys"),
}


def _fingerprint(data_dir: Path) -> dict[str, str]:
    """Every file outside keys/, by name, with a hash of its bytes."""
    return {
        str(p.relative_to(data_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(data_dir.rglob("*"))
        if p.is_file() and "keys" not in p.relative_to(data_dir).parts
    }


async def _run_once(data_dir: Path, workdir: Path) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFEGUARD_")}
    env.update(
        {
            "SAFEGUARD_TELEGRAM__TOKEN": "123456:fault-injection",
            "SAFEGUARD_TELEGRAM__API_BASE": "http://127.0.0.1:9",  # never reached
            "SAFEGUARD_STAFF__CHAT_ID": str(STAFF_CHAT_ID),
            "SAFEGUARD_STORAGE__DATA_DIR": str(data_dir),
            "SAFEGUARD_LOGGING__LEVEL": "INFO",
        }
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "run",
        cwd=workdir,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return -1, "did not exit: it started despite the damaged keys"
    return proc.returncode or 0, (out + err).decode(errors="replace")


async def test_damaged_or_missing_keys_refuse_to_start_and_write_nothing(
    tmp_path: Path, data_dir: Path
) -> None:
    # Given one data dir per fault, each a copy of a working install: keys and a database
    # that has been used (and, for two faults, a brand-new install with no database yet)
    async with SqliteStore(data_dir):
        pass
    cases: list[tuple[str, Path, str, bool]] = []
    for n, (name, (damage, filename)) in enumerate(KEY_FAULTS.items()):
        for used in (True, False) if name in ("secrets missing", "keys dir missing") else (True,):
            copy = tmp_path / f"case{n}{'u' if used else 'n'}" / "data"
            shutil.copytree(data_dir, copy)
            if not used:
                (copy / DB_NAME).unlink()
            damage(copy / "keys")
            cases.append((f"{name} ({'used' if used else 'new'})", copy, filename, used))
    before = {label: _fingerprint(copy) for label, copy, _, _ in cases}

    # When `safeguard run` is started on each
    results = await asyncio.gather(*(_run_once(copy, copy.parent) for _, copy, _, _ in cases))

    # Then each refuses with status 2 and one line that names the file and says what to do,
    # no traceback, and the database is neither created nor changed (no plaintext fallback)
    for (label, copy, filename, used), (code, output) in zip(cases, results, strict=True):
        lines = [line for line in output.splitlines() if line.strip()]
        assert code == 2, f"{label}: exit {code}\n{output}"
        assert len(lines) == 1, f"{label}: expected one line\n{output}"
        line = lines[0]
        assert line.startswith("safeguard: "), f"{label}: {line}"
        assert "Traceback" not in output, f"{label}: {output}"
        assert filename in line, f"{label}: the file is not named: {line}"
        assert str(copy / "keys") in line, f"{label}: no full path to look at: {line}"
        assert any(w in line for w in ("restore", "safeguard keys")), f"{label}: {line}"
        if used:
            # A used install: new keys could not open what is stored, so never advise that
            assert "keys init" not in line, f"{label}: would lose every report: {line}"
        assert _fingerprint(copy) == before[label], f"{label}: the data dir was written to"
        assert (copy / DB_NAME).exists() == used, label


async def test_a_swapped_bot_secret_refuses_to_start_with_one_line_naming_it(
    tmp_path: Path, data_dir: Path
) -> None:
    # Given a data dir the bot has used through one rotation (the database remembers a check
    # value of each secret, never the secret), then one key in bot_secrets.json replaced by
    # another well-formed value, as a restored or hand-edited file would have it
    await rotate_bot_secrets(data_dir)
    secrets_path = data_dir / "keys" / "bot_secrets.json"
    before_swap = secrets_path.read_text()
    _rewrite_json(secrets_path, _swap_newest_draft_key)
    before = _fingerprint(data_dir)

    # When `safeguard run` is started
    code, output = await _run_once(data_dir, tmp_path)

    # Then it refuses with status 2 and one line naming the file, the key and what to do,
    # with no key of either file in it, and the database is left as it was
    lines = [line for line in output.splitlines() if line.strip()]
    assert code == 2, output
    assert lines == [
        f"safeguard: {secrets_path} does not match the database: the draft key of "
        "generation 2 differs; restore the bot_secrets.json that belongs to this data dir"
    ], output
    for doc in (json.loads(before_swap), json.loads(secrets_path.read_text())):
        values = [doc["audit_key"]] + [
            v for g in doc["generations"] for k, v in g.items() if k.endswith(("_pepper", "_key"))
        ]
        assert not [v for v in values if v in output or base64.b64decode(v).hex() in output]
    assert _fingerprint(data_dir) == before


# ----------------------------------------------------------------------------------------------
# Shared by the live tests below
# ----------------------------------------------------------------------------------------------


@pytest.fixture
async def team(emulator: BotApiEmulator, staff_chat: SimGroup) -> Team:
    return Team(emulator, staff_chat)


def staff_chat_sends(emulator: BotApiEmulator, since: int = 0) -> list[str]:
    """Texts of the staff-chat messages Telegram accepted, in the order the bot sent them."""
    return [
        str(r.params.get("text", ""))
        for r in emulator.requests[since:]
        if r.method == "sendMessage" and str(r.params.get("chat_id")) == str(STAFF_CHAT_ID) and r.ok
    ]


def alerts_for(texts: list[str], ref: str) -> list[str]:
    return [t for t in texts if ref in t and "alert" in t and "New message" not in t]


def first_time_alerts(texts: list[str], ref: str) -> list[str]:
    """Alerts not marked as a possible repeat (the one repeat a crash may cause says so)."""
    return [t for t in alerts_for(texts, ref) if "Sent again after a restart" not in t]


async def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.1)


async def alarm(user: SimUser, timeout: float = 5.0) -> str | None:
    """Send the danger message; the reference the reporter was given, if they were."""
    sent = await user.send_text(DANGER)
    try:
        reply = await user.wait_for_bot_message(timeout=timeout, after=sent["message_id"])
    except AssertionError:
        return None
    found = REF.search(message_text(reply))
    return found.group(0) if found else None


def db_rows(data_dir: Path, sql: str, *params: object) -> list[tuple]:
    with sqlite3.connect(f"file:{data_dir / DB_NAME}?mode=ro", uri=True) as db:
        return db.execute(sql, params).fetchall()


# ----------------------------------------------------------------------------------------------
# 3. The database held by another writer during traffic
# ----------------------------------------------------------------------------------------------

HOLD_SECONDS = 8.0  # longer than the bot's busy timeout (5 s)


async def test_a_long_lock_on_the_database_loses_no_alert(
    emulator: BotApiEmulator, team: Team, data_dir: Path, tmp_path: Path
) -> None:
    process = await start_bot(emulator, data_dir, tmp_path, **SLOW_TIMERS)
    try:
        routine = emulator.user(3201, "Lia")
        await begin(routine, "young_person")
        await routine.wait_for_bot_message()
        # Given another writer holds the database (a long maintenance job, a stuck script)
        locked, release = threading.Event(), threading.Event()

        def hold() -> None:
            db = sqlite3.connect(data_dir / DB_NAME, isolation_level=None)
            db.execute("BEGIN IMMEDIATE")
            locked.set()
            release.wait(30)
            db.execute("ROLLBACK")
            db.close()

        holder = threading.Thread(target=hold)
        holder.start()
        await asyncio.to_thread(locked.wait, 5)
        try:
            # When a reporter sends an urgent message and another answers a question
            urgent = emulator.user(3202, "Max")
            sent = await urgent.send_text(DANGER)
            answered = await routine.send_text("I saw it happen")
            await asyncio.sleep(HOLD_SECONDS)
        finally:
            release.set()
            await asyncio.to_thread(holder.join)

        # Then each turn waited or got the plain answer, never silence
        for user, after in ((urgent, sent), (routine, answered)):
            reply = await user.wait_for_bot_message(timeout=10, after=after["message_id"])
            text = message_text(reply)
            assert REF.search(text) or "try again" in text or "?" in text, text
        # And the urgent message reaches the staff chat, once, after the lock is released
        await wait_until(
            lambda: bool(db_rows(data_dir, "SELECT 1 FROM escalations")), 15, "the escalation"
        )
        (ref,) = [r for (r,) in db_rows(data_dir, "SELECT case_ref FROM escalations")]
        await wait_until(lambda: bool(alerts_for(staff_chat_sends(emulator), ref)), 15, "the alert")
        await asyncio.sleep(1)
        assert len(alerts_for(staff_chat_sends(emulator), ref)) == 1
    finally:
        assert await process.stop() == 0, process.log()
    assert "Traceback" not in process.log()


# ----------------------------------------------------------------------------------------------
# 4. A long Telegram outage, then recovery
# ----------------------------------------------------------------------------------------------

OUTAGE_PHASE_SECONDS = 10.0
ALWAYS = 10**9


def outage(emulator: BotApiEmulator, *methods: str) -> None:
    for method in methods:
        emulator.fail_next(method, status=500, count=ALWAYS)


def followups_for(texts: list[str], ref: str) -> list[str]:
    return [t for t in texts if ref in t and "New message from the reporter" in t]


async def test_a_long_telegram_outage_delays_but_never_loses_or_doubles_and_alerts_go_first(
    emulator: BotApiEmulator, team: Team, data_dir: Path, tmp_path: Path
) -> None:
    process = await start_bot(emulator, data_dir, tmp_path, **SLOW_TIMERS)
    try:
        await team.start_private_chats()
        # Given two reporters who have sent reports, and so may write again
        writers = [emulator.user(3300 + n, f"W{n}") for n in range(2)]
        for writer in writers:
            await begin(writer, "worried_adult")
        refs = await asyncio.gather(*(answer_everything(w) for w in writers))

        # When Telegram fails every request but getUpdates: the bot hears, cannot answer
        outage_began = len(emulator.requests)
        outage(emulator, "sendMessage", "editMessageText", "deleteMessage", "deleteMessages")
        outage(emulator, "answerCallbackQuery", "sendChatAction", "getMe")
        urgent = [emulator.user(3310 + n, f"U{n}") for n in range(2)]
        for user in urgent:
            await user.send_text(DANGER)
        for n, writer in enumerate(writers):
            await writer.send_text(f"one more thing number {n}")
        await asyncio.sleep(OUTAGE_PHASE_SECONDS)
        waiting = {r for (r,) in db_rows(data_dir, "SELECT case_ref FROM escalations")}
        # ... and then getUpdates too: a reporter's urgent message waits at Telegram
        outage(emulator, "getUpdates")
        late = emulator.user(3320, "Late")
        await late.send_text(DANGER)
        await asyncio.sleep(OUTAGE_PHASE_SECONDS)
        recovered_at = len(emulator.requests)
        assert not staff_chat_sends(emulator, outage_began), "Telegram was down"
        emulator._faults.clear()

        # Then everything queued is delivered, every alert exactly once, the alerts first
        assert len(waiting) == len(urgent), waiting  # heard and stored during the outage
        await wait_until(
            lambda: len(db_rows(data_dir, "SELECT 1 FROM escalations")) == len(urgent) + 1,
            20,
            "the late urgent message to be handled",
        )
        all_refs = {r for (r,) in db_rows(data_dir, "SELECT case_ref FROM escalations")}

        def delivered() -> bool:
            texts = staff_chat_sends(emulator, recovered_at)
            return all(alerts_for(texts, r) for r in all_refs) and all(
                followups_for(texts, r) for r in refs
            )

        await wait_until(delivered, 40, "everything queued to reach the staff chat")
        await asyncio.sleep(1.5)
        texts = staff_chat_sends(emulator)
        for ref in all_refs:
            assert len(alerts_for(texts, ref)) == 1, (ref, texts)
            assert len(team.alerts(team.asha, ref)) == 1, ref
        for ref in refs:
            assert len(followups_for(texts, ref)) == 1, (ref, texts)
        after = staff_chat_sends(emulator, recovered_at)
        last_alert = max(i for i, t in enumerate(after) for r in waiting if r in t and "alert" in t)
        first_notice = min(i for i, t in enumerate(after) for r in refs if r in t)
        assert last_alert < first_notice, after
        # And the late reporter, heard after the outage, was answered
        # (heard before getUpdates failed, its answer kept trying through the outage)
        await late.wait_for_bot_message(contains="999", timeout=20)
    finally:
        assert await process.stop() == 0, process.log()
    assert "Traceback" not in process.log()


# ----------------------------------------------------------------------------------------------
# 5. kill -9 at random moments under light load
# ----------------------------------------------------------------------------------------------

ROUTINE_REPORTERS = 12
URGENT_REPORTERS = 8
KILLS = 3


async def patient_report(user: SimUser, patience: float = 8.0) -> str | None:
    """A whole routine report, as a person would make it: when no answer comes (a reply lost
    to a kill), do the last thing again. The reference code shown after Send, if it was."""

    async def start() -> None:
        await user.send_text("/start")

    action: Callable[[], Awaitable[object]] = start
    await action()
    for _ in range(40):
        try:
            await user.wait_for_bot_message(timeout=patience)
        except AssertionError:
            await action()
            continue
        await asyncio.sleep(0.3)  # a reply of several messages
        for message in user.bot_messages():
            found = REF.search(message_text(message))
            if found and "reference code" in message_text(message):
                return found.group(0)
        prompt = user.last_bot_message()
        assert prompt is not None
        text, labels = message_text(prompt), buttons(prompt)
        if "✅ Send" in labels:
            action = functools.partial(user.press, "✅ Send")
        elif AUDIENCE_LABELS["worried_adult"] in labels:
            action = functools.partial(user.press, AUDIENCE_LABELS["worried_adult"])
        elif "danger right now" in text and "No" in labels:
            action = functools.partial(user.press, "No")
        elif "Yes, they can reply" in labels:
            action = functools.partial(user.press, "Yes, they can reply")
        elif "Skip" in labels:
            action = functools.partial(user.press, "Skip")
        elif not labels and "?" not in text:
            continue  # more of the reply is on its way
        else:
            action = functools.partial(user.send_text, "I saw it happen")
        await action()
    return None


async def test_kill_9_at_random_moments_under_load_loses_and_doubles_nothing(
    emulator: BotApiEmulator, team: Team, data_dir: Path, tmp_path: Path
) -> None:
    seed = int(time.time())
    rng = random.Random(seed)
    process = await start_bot(emulator, data_dir, tmp_path, **SLOW_TIMERS)
    given: dict[int, str] = {}  # reporter -> the reference code shown after Send
    abandoned: list[int] = []

    async def routine(n: int) -> None:
        user = emulator.user(3400 + n, f"R{n}")
        await asyncio.sleep(rng.uniform(0, 4))
        ref = await patient_report(user)
        if ref is None:
            abandoned.append(user.id)
        else:
            given[user.id] = ref

    async def urgent(n: int) -> None:
        await asyncio.sleep(rng.uniform(0, 8))
        await emulator.user(3450 + n, f"U{n}").send_text(DANGER)

    async def killer() -> None:
        for _ in range(KILLS):
            await asyncio.sleep(rng.uniform(2.0, 5.0))
            await process.kill()
            await process.start()

    try:
        # Given twenty people reporting at once, and the bot killed three times at random
        await asyncio.gather(
            *(routine(n) for n in range(ROUTINE_REPORTERS)),
            *(urgent(n) for n in range(URGENT_REPORTERS)),
            killer(),
        )

        # When the last process has caught up with everything Telegram still holds
        def escalations() -> list[str]:
            return [r for (r,) in db_rows(data_dir, "SELECT case_ref FROM escalations")]

        await wait_until(
            lambda: len(escalations()) >= URGENT_REPORTERS, 20, f"every alert (seed {seed})"
        )
        refs = escalations()
        await wait_until(
            lambda: all(alerts_for(staff_chat_sends(emulator), r) for r in refs),
            20,
            f"every alert in the staff chat (seed {seed})",
        )
        await asyncio.sleep(1.5)

        # Then every urgent message reached the staff chat exactly once (a second copy is only
        # allowed if it says it may be a repeat: the documented crash window)
        assert len(refs) == len(set(refs)) == URGENT_REPORTERS, (seed, refs)
        texts = staff_chat_sends(emulator)
        for ref in refs:
            assert len(first_time_alerts(texts, ref)) == 1, (seed, ref, texts)
            assert len(alerts_for(texts, ref)) <= 2, (seed, ref, texts)
        # And every report answered with a reference code is stored exactly once
        assert len(given) >= ROUTINE_REPORTERS // 2, (seed, given, abandoned)
        for ref in given.values():
            (submitted,) = db_rows(data_dir, "SELECT submitted_at FROM cases WHERE ref = ?", ref)
            assert submitted[0] is not None, (seed, ref)
            reports = db_rows(
                data_dir, "SELECT 1 FROM records WHERE case_ref = ? AND kind = 'report'", ref
            )
            assert len(reports) == 1, (seed, ref)
        assert len(set(given.values())) == len(given), seed
    finally:
        assert await process.stop() == 0, process.log()


# ----------------------------------------------------------------------------------------------
# 6. Timeouts and connection resets: a request that never gets an answer
# ----------------------------------------------------------------------------------------------

# The bot gives up on a request after 2 s here (20 s by default), so a stall costs 2 s.
QUICK_TIMEOUT = {"SAFEGUARD_TELEGRAM__REQUEST_TIMEOUT_SECONDS": "2"}
POSSIBLE_REPEAT = "Sent again after a restart"
# /start is answered with two messages: this one, then the question.
INTRO, QUESTION = "You can tell us here", "Who is this about?"


def times_shown(user: SimUser, words: str) -> int:
    return sum(words in message_text(m) for m in user.bot_messages())


def staff_chat_requests(emulator: BotApiEmulator, ref: str) -> list[RecordedRequest]:
    """Every sendMessage to the staff chat about `ref`: faulted, failed or accepted."""
    return [
        r
        for r in emulator.requests_for("sendMessage")
        if str(r.params.get("chat_id")) == str(STAFF_CHAT_ID) and ref in str(r.params["text"])
    ]


async def still_listening(emulator: BotApiEmulator, user_id: int) -> None:
    """A new reporter is answered: the bot is alive and polling."""
    newcomer = emulator.user(user_id, "New")
    await newcomer.send_text("/start")
    await newcomer.wait_for_bot_message(contains=QUESTION, timeout=10)
    assert times_shown(newcomer, INTRO) == times_shown(newcomer, QUESTION) == 1


async def test_staff_alerts_get_through_timeouts_and_resets_and_polling_goes_on(
    emulator: BotApiEmulator, team: Team, data_dir: Path, tmp_path: Path
) -> None:
    process = await start_bot(emulator, data_dir, tmp_path, **SLOW_TIMERS, **QUICK_TIMEOUT)
    try:
        # Given the staff chat's next send times out and the one after is reset, both before
        # Telegram acted on them
        emulator.stall_next("sendMessage", chat_id=STAFF_CHAT_ID)
        emulator.reset_next("sendMessage", chat_id=STAFF_CHAT_ID)

        # When a reporter raises an alarm
        ref = await alarm(emulator.user(3501, "Una"))
        assert ref is not None, "the reporter was not answered"

        # Then the alert reaches the staff chat on the third try, once. (It says it may be a
        # repeat: the bot cannot tell a request dropped before Telegram acted from one whose
        # answer was lost.)
        await team.chat.wait_for_bot_message(contains=ref, timeout=15)
        tries = staff_chat_requests(emulator, ref)
        assert [(r.fault, r.answered, r.ok) for r in tries] == [
            ("stall", False, False),
            ("reset", False, False),
            (None, True, True),
        ], emulator.dump_requests(20)
        (alert,) = team.alerts(team.chat, ref)
        assert POSSIBLE_REPEAT in message_text(alert)

        # Given next Telegram posts an alert but its answer is lost: to a timeout, then (for
        # the retry) to a connection reset
        emulator.stall_next("sendMessage", acted=True, chat_id=STAFF_CHAT_ID)
        emulator.reset_next("sendMessage", acted=True, chat_id=STAFF_CHAT_ID)

        # When another reporter raises an alarm
        ref = await alarm(emulator.user(3502, "Vic"))
        assert ref is not None, "the reporter was not answered"

        # Then the bot, not knowing the alert arrived, sends it until it hears so: nothing in
        # the Bot API tells whether a message landed, and losing an alert is worse than a
        # repeat. Every repeat says it may be one; the first copy does not.
        await emulator.wait_for(
            lambda: [r.answered for r in staff_chat_requests(emulator, ref)][2:] == [True], 15
        )
        tries = staff_chat_requests(emulator, ref)
        assert [(r.fault, r.ok) for r in tries] == [
            ("stall", True),
            ("reset", True),
            (None, True),
        ], emulator.dump_requests(20)
        texts = [message_text(m) for m in team.alerts(team.chat, ref)]
        assert len(texts) == 3
        assert POSSIBLE_REPEAT not in texts[0]
        assert all(POSSIBLE_REPEAT in t for t in texts[1:]), texts

        # And the bot is still alive and listening
        await still_listening(emulator, 3509)
        assert process.proc is not None and process.proc.returncode is None
    finally:
        assert await process.stop() == 0, process.log()
    assert "Traceback" not in process.log()


async def test_get_updates_timing_out_and_reset_loses_and_doubles_no_message(
    emulator: BotApiEmulator, team: Team, data_dir: Path, tmp_path: Path
) -> None:
    process = await start_bot(emulator, data_dir, tmp_path, **SLOW_TIMERS, **QUICK_TIMEOUT)
    try:
        # Given getUpdates is reset, then times out after Telegram handed the updates over
        # (the answer with them is lost), then is reset again
        emulator.reset_next("getUpdates")
        emulator.stall_next("getUpdates", acted=True)
        emulator.reset_next("getUpdates")
        began = len(emulator.requests)
        await emulator.wait_for(
            lambda: any(r.fault for r in emulator.requests[began:]), 5, "the first reset"
        )

        # When three reporters write while it fails
        people = [emulator.user(3520 + n, f"P{n}") for n in range(3)]
        for person in people:
            await person.send_text("/start")

        # Then each is answered once, after the failures, and so is someone writing later
        for person in people:
            await person.wait_for_bot_message(contains=QUESTION, timeout=15)
        polls = emulator.requests_for("getUpdates")[-20:]
        handed_over = next(r for r in polls if r.fault == "stall")
        assert len(handed_over.result) == 3  # the updates were in the answer that was lost
        await still_listening(emulator, 3529)
        for person in people:
            assert times_shown(person, INTRO) == times_shown(person, QUESTION) == 1
            assert len(person.bot_messages()) == 1, person.describe()  # one message a turn
        # And the bot asked again at a bounded pace, not in a storm
        during = [r for r in emulator.requests[began:] if r.method == "getUpdates"]
        assert sum(1 for r in during if r.fault) == 3
        assert len(during) < 15, emulator.dump_requests(20)
        assert "polling_failed" in process.log()
    finally:
        assert await process.stop() == 0, process.log()
    assert "Traceback" not in process.log()


async def test_a_reporters_reply_lost_to_resets_and_a_timeout_still_reaches_them(
    emulator: BotApiEmulator, team: Team, data_dir: Path, tmp_path: Path
) -> None:
    process = await start_bot(emulator, data_dir, tmp_path, **SLOW_TIMERS, **QUICK_TIMEOUT)
    try:
        # Given one reporter's reply (its first message) is reset and then times out before
        # Telegram acted, and another's is posted but the answer is lost to a reset
        quiet, unlucky = emulator.user(3531, "Wyn"), emulator.user(3532, "Xan")
        emulator.reset_next("sendMessage", chat_id=quiet.id)
        emulator.stall_next("sendMessage", chat_id=quiet.id)
        emulator.reset_next("sendMessage", acted=True, chat_id=unlucky.id)

        # When both start a report
        await quiet.send_text("/start")
        await unlucky.send_text("/start")

        # Then the first gets the answer (one message a turn) once, on the third try
        await quiet.wait_for_bot_message(contains=QUESTION, timeout=15)
        sends = [r for r in emulator.requests_for("sendMessage") if r.params["chat_id"] == quiet.id]
        assert [r.fault for r in sends] == ["reset", "stall", None]
        assert times_shown(quiet, INTRO) == times_shown(quiet, QUESTION) == 1
        assert len(quiet.bot_messages()) == 1, quiet.describe()
        # And the second sees that message twice: the retry cannot know the first one landed
        # (the one repeat a lost answer can cause), and the conversation goes on
        await unlucky.wait_for_bot_message(contains=QUESTION, count=2, timeout=10)
        assert times_shown(unlucky, INTRO) == times_shown(unlucky, QUESTION) == 2
        await unlucky.press(AUDIENCE_LABELS["worried_adult"])
        await unlucky.wait_for_bot_message(timeout=10)
    finally:
        assert await process.stop() == 0, process.log()
    assert "Traceback" not in process.log()
