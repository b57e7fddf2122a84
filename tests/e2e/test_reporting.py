"""A reporter's whole journey over Telegram: the real bot process, the local Bot API emulator."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from tests.e2e.conftest import BotProcess
from tests.emulator import BotApiEmulator, SimGroup, SimUser, message_text

REF = re.compile(r"\b[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}\b")
AUDIENCE_LABELS = {
    "young_person": "It's about me or a friend",
    "worried_adult": "I'm worried about a child",
    "professional": "I saw something at work",
}


def buttons(message: dict) -> list[str]:
    markup = message.get("reply_markup") or {}
    return [b["text"] for row in markup.get("inline_keyboard", []) for b in row]


async def next_prompt(user: SimUser) -> dict:
    """The newest bot message with buttons, after the latest action. A reply of several
    messages arrives one a second (Telegram's pace for a chat): wait for the one that asks."""
    await user.wait_for_bot_message()
    for _ in range(60):
        await asyncio.sleep(0.05)
        message = user.last_bot_message()
        if message is not None and buttons(message):
            return message
    message = user.last_bot_message()
    assert message is not None
    return message


async def answer_until(
    user: SimUser,
    stop: str = "✅ Send",
    texts: dict[str, str] | None = None,
    danger: str = "No",
    contact: str = "Yes, they can reply",
) -> dict:
    """Answer questions until a prompt shows `stop` (a button or words); return that prompt.

    Types the words in `texts` for questions that contain a key, skips optional questions,
    types a short answer to required ones, and answers the danger and reply questions.
    """
    texts = dict(texts or {})
    for _ in range(30):
        prompt = await next_prompt(user)
        labels, body = buttons(prompt), message_text(prompt)
        if stop in labels or stop in body:
            return prompt
        key = next((k for k in texts if k in body), None)
        if key is not None:
            await user.send_text(texts.pop(key))
        elif "danger right now" in body and danger in labels:  # not the 999 line before a question
            await user.press(danger)
        elif "Yes, they can reply" in labels:
            await user.press(contact)
        elif "Skip" in labels:
            await user.press("Skip")
        else:
            await user.send_text("I saw it happen")
    raise AssertionError(f"never reached {stop!r}:\n{user.describe()}")


async def answer_everything(user: SimUser, texts: dict[str, str] | None = None, **kw: str) -> str:
    """From the current question to Send; returns the reference code the reporter was given."""
    await answer_until(user, "✅ Send", texts, **kw)
    await user.press("✅ Send")
    done = await user.wait_for_bot_message(contains="reference code")
    found = REF.search(message_text(done))
    assert found, message_text(done)
    return found.group(0)


async def begin(user: SimUser, audience: str) -> None:
    await user.send_text("/start")
    await user.wait_for_bot_message(contains="Who is this about?")
    await user.press(AUDIENCE_LABELS[audience])


@pytest.mark.parametrize("audience", list(AUDIENCE_LABELS))
async def test_each_audience_gets_a_reference_code(
    emulator: BotApiEmulator, bot: BotProcess, staff_chat: SimGroup, audience: str
) -> None:
    user = emulator.user(2001, "Alex", username="alex_2001")
    await begin(user, audience)
    ref = await answer_everything(user)
    assert REF.fullmatch(ref)
    assert not staff_chat.bot_messages()  # nothing urgent: no alert
    welcome = message_text(user.history()[1])
    assert "999" in welcome and "0800 1111" in welcome and "0808 800 5000" in welcome


async def test_help_gives_the_numbers_and_says_what_is_not_anonymous(
    emulator: BotApiEmulator, bot: BotProcess
) -> None:
    user = emulator.user(2002, "Bo")
    await user.send_text("/help")
    text = message_text(await user.wait_for_bot_message(contains="What is not hidden"))
    assert "999" in text and "0800 1111" in text and "0808 800 5000" in text
    assert "Telegram knows who uses this chat" in text


async def test_danger_phrase_alerts_staff_who_acknowledge_it(
    emulator: BotApiEmulator, bot: BotProcess, staff_chat: SimGroup, staff_member: SimUser
) -> None:
    user = emulator.user(2003, "Cy")
    await begin(user, "young_person")
    await user.wait_for_bot_message(contains="What is happening")
    started = asyncio.get_running_loop().time()
    sent = await user.send_text("hes outside my house rn and wont go away")
    alert = await staff_chat.wait_for_bot_message(contains="IMMEDIATE", timeout=5)
    elapsed = asyncio.get_running_loop().time() - started
    assert elapsed < 1.0, f"alert took {elapsed:.2f}s"
    await user.wait_for_bot_message(contains="Who is this happening to?")
    replies = [m for m in user.bot_messages() if m["message_id"] > sent["message_id"]]
    assert "call 999" in message_text(replies[0])  # signposting before anything else
    ref = REF.search(message_text(alert))
    assert ref is not None
    assert ref.group(0) in message_text(await user.wait_for_bot_message(contains=ref.group(0)))
    # Nothing identifying in the staff message.
    for needle in ("2003", "Cy", "outside my house"):
        assert needle not in message_text(alert)

    stranger = emulator.user(9999, "Mallory")
    query = await staff_chat.press(stranger, "✋ Acknowledge")
    answer = await stranger.wait_for_answer(query)
    assert "Only members" in answer.get("text", "")
    query = await staff_chat.press(staff_member, "✋ Acknowledge")
    edited = await staff_chat.wait_for_edit(alert["message_id"], contains="Acknowledged by Sam")
    assert buttons(edited) == ["👤 Take case"]  # paging stopped; someone can still take it


async def test_danger_answer_yes_alerts_staff(
    emulator: BotApiEmulator, bot: BotProcess, staff_chat: SimGroup
) -> None:
    user = emulator.user(2004, "Dee")
    await begin(user, "worried_adult")
    await answer_until(user, "danger right now")
    await user.press("Yes")
    reply = await user.wait_for_bot_message(contains="call 999")
    alert = await staff_chat.wait_for_bot_message(contains="IMMEDIATE")
    assert "reporter said someone is in danger right now" in message_text(alert)
    assert REF.search(message_text(reply)).group(0) in message_text(alert)  # type: ignore[union-attr]


async def test_alert_survives_telegram_errors(
    emulator: BotApiEmulator, bot: BotProcess, staff_chat: SimGroup
) -> None:
    emulator.fail_next("sendMessage", status=429, retry_after=1, chat_id=staff_chat.chat_id)
    emulator.fail_next("sendMessage", status=500, count=2, chat_id=staff_chat.chat_id)
    user = emulator.user(2005, "Eve")
    await user.send_text("please help he has a knife")
    await user.wait_for_bot_message(contains="999")
    await staff_chat.wait_for_bot_message(contains="IMMEDIATE", timeout=15)
    assert len(staff_chat.bot_messages()) == 1


async def test_restart_mid_conversation_loses_nothing(
    emulator: BotApiEmulator, bot: BotProcess
) -> None:
    user = emulator.user(2006, "Fi")
    await begin(user, "worried_adult")
    await user.wait_for_bot_message(contains="What has happened")
    await user.send_text("my nephew is being given vapes by older lads")
    await user.wait_for_bot_message(contains="Who is the child?")
    assert await bot.stop() == 0
    await bot.start()
    await user.press("A child I know")
    await user.wait_for_bot_message(contains="how old")
    ref = await answer_everything(user)
    assert REF.fullmatch(ref)


async def test_duplicate_update_is_answered_once(emulator: BotApiEmulator, bot: BotProcess) -> None:
    user = emulator.user(2007, "Gus")
    await begin(user, "young_person")
    await user.wait_for_bot_message(contains="What is happening")
    sent = await user.send_text("someone online keeps asking for pics")
    await user.wait_for_bot_message(contains="Who is this happening to?")
    count = len(user.bot_messages())
    update_id = max(
        u
        for u, upd in emulator.updates.items()
        if "message" in upd
        and upd["message"]["message_id"] == sent["message_id"]
        and upd["message"]["chat"]["id"] == user.id
    )
    emulator.duplicate_update(update_id)
    await emulator.wait_for(lambda: emulator.pending_updates == 0, timeout=5)
    await asyncio.sleep(0.5)
    assert len(user.bot_messages()) == count


async def test_quick_exit_deletes_the_conversation(
    emulator: BotApiEmulator, bot: BotProcess
) -> None:
    user = emulator.user(2008, "Hal")
    await begin(user, "young_person")
    await user.wait_for_bot_message(contains="What is happening")
    await user.send_text("my stepdad hurts me")
    await user.wait_for_bot_message(contains="Who is this happening to?")
    await user.send_text("/exit")
    await user.wait_for_bot_message(contains="Cleared")
    remaining = user.history()
    assert len(remaining) == 1, user.describe()
    assert "stepdad" not in message_text(remaining[0])


async def test_leave_now_button_deletes_the_conversation(
    emulator: BotApiEmulator, bot: BotProcess
) -> None:
    user = emulator.user(2009, "Ida")
    await begin(user, "young_person")
    await user.wait_for_bot_message(contains="What is happening")
    await user.press("🚪 Leave now")
    await user.wait_for_bot_message(contains="Cleared")
    assert len(user.history()) == 1, user.describe()


@pytest.mark.parametrize("kind", ["photo", "video", "document", "voice", "location", "contact"])
async def test_media_is_deleted_and_never_kept(
    emulator: BotApiEmulator, bot: BotProcess, staff_chat: SimGroup, kind: str
) -> None:
    user = emulator.user(2010, "Jo")
    await user.send_text("/start")
    await user.wait_for_bot_message(contains="Who is this about?")
    sent = await getattr(user, f"send_{kind}")()
    await user.wait_for_bot_message(contains="in words")
    assert user.message(sent["message_id"]) is None  # deleted from the chat
    for method in ("forwardMessage", "copyMessage", "getFile", "sendPhoto", "sendDocument"):
        assert not emulator.requests_for(method), method
    assert not staff_chat.bot_messages()


async def test_sticker_is_not_kept_and_reporter_asked_for_words(
    emulator: BotApiEmulator, bot: BotProcess
) -> None:
    user = emulator.user(2011, "Kit")
    await user.send_sticker()
    await user.wait_for_bot_message(contains="I can only read words")


async def test_forged_callback_data_changes_nothing(
    emulator: BotApiEmulator, bot: BotProcess, staff_chat: SimGroup
) -> None:
    user = emulator.user(2012, "Lee")
    await begin(user, "young_person")
    prompt = await user.wait_for_bot_message(contains="What is happening")
    for raw in ("r:option:danger_now:yes:999", "garbage", "ack:1", "r:option::"):
        query = await user.press_data(prompt["message_id"], raw)
        await user.wait_for_answer(query)
    await asyncio.sleep(0.3)
    assert not staff_chat.bot_messages()
    await user.send_text("still here")
    await user.wait_for_bot_message(contains="Who is this happening to?")


async def test_unknown_group_is_left(emulator: BotApiEmulator, bot: BotProcess) -> None:
    group = emulator.group(-1002000000002, "Random group")
    await emulator.add_bot_to_group(group, emulator.user(3001, "Nat"))
    await emulator.wait_for(lambda: group.bot_left, timeout=5)


async def test_staff_chat_is_not_left(
    emulator: BotApiEmulator, bot: BotProcess, staff_chat: SimGroup, staff_member: SimUser
) -> None:
    await staff_chat.send_text(staff_member, "/queue")
    await asyncio.sleep(0.5)
    assert not staff_chat.bot_left


async def test_edited_message_is_noted(emulator: BotApiEmulator, bot: BotProcess) -> None:
    user = emulator.user(2013, "Max")
    await begin(user, "young_person")
    await user.wait_for_bot_message(contains="What is happening")
    sent = await user.send_text("a man at the park")
    await user.wait_for_bot_message(contains="Who is this happening to?")
    await user.edit_text(sent["message_id"], "a man at the park gave me weed")
    await user.wait_for_bot_message(contains="You changed a message")


async def test_long_and_awkward_text_is_kept_and_echoed_safely(
    emulator: BotApiEmulator, bot: BotProcess
) -> None:
    user = emulator.user(2014, "Ola")
    await begin(user, "young_person")
    await user.wait_for_bot_message(contains="What is happening")
    await user.send_text("\u200b\u202e ")
    await user.wait_for_bot_message(contains="couldn't see any words")
    await user.send_text("<b>he</b> & his mates " + "x" * (4096 - 22))
    summary = message_text(await answer_until(user, "✅ Send"))
    assert "<b>he</b> & his mates" in summary  # shown as typed, not as markup


async def test_staff_reply_reaches_the_reporter_without_revealing_them(
    emulator: BotApiEmulator, bot: BotProcess, staff_chat: SimGroup, staff_member: SimUser
) -> None:
    user = emulator.user(2015, "Pip", username="pip_secret")
    await begin(user, "young_person")
    ref = await answer_everything(user)
    await staff_chat.send_text(staff_member, f"/reply {ref} Thank you. Are you safe tonight?")
    got = await user.wait_for_bot_message(contains="Are you safe tonight?")
    assert "A message from the safeguarding team" in message_text(got)
    confirm = await staff_chat.wait_for_bot_message(contains="Sent to the reporter")
    for needle in ("2015", "Pip", "pip_secret"):
        assert all(needle not in message_text(m) for m in staff_chat.bot_messages()), needle
    assert ref in message_text(confirm)

    stranger = emulator.user(9998, "Rex")
    await staff_chat.send_text(stranger, f"/reply {ref} let me in")
    await asyncio.sleep(0.5)
    assert not any("let me in" in message_text(m) for m in user.history())


async def test_reporter_who_declines_replies_is_not_messaged(
    emulator: BotApiEmulator, bot: BotProcess, staff_chat: SimGroup, staff_member: SimUser
) -> None:
    user = emulator.user(2016, "Quin")
    await begin(user, "worried_adult")
    ref = await answer_everything(user, contact="No, don't reply")
    await staff_chat.send_text(staff_member, f"/reply {ref} hello")
    await staff_chat.wait_for_bot_message(contains="asked not to be contacted")


async def test_no_plaintext_or_ids_in_data_dir_or_logs(
    emulator: BotApiEmulator, bot: BotProcess, staff_chat: SimGroup, data_dir: Path
) -> None:
    canaries = ["canary-7f3a-tangerine-lighthouse", "canary-place-Gloopshire", "canary-reg-ZX99"]
    user_id = 734_251_998_811
    user = emulator.user(user_id, "Wren", username="wren_canary_name")
    await begin(user, "professional")
    await answer_everything(
        user,
        {
            "What did you see": f"{canaries[0]} a girl of 13 is in a car with older men right now",
            "Where did it happen": canaries[1],
            "registration": canaries[2],
        },
    )
    await staff_chat.wait_for_bot_message(contains="IMMEDIATE")
    assert await bot.stop() == 0
    needles = [*canaries, str(user_id), "wren_canary_name", "Wren"]
    files = [p for p in data_dir.rglob("*") if p.is_file()] + [bot.log_path]
    assert any(p.name.endswith(".sqlite3") for p in files)
    for path in files:
        blob = path.read_bytes()
        for needle in needles:
            assert needle.encode() not in blob, f"{needle!r} found in {path}"
    assert staff_chat.bot_messages()
    for message in staff_chat.bot_messages():
        for needle in needles:
            assert needle not in message_text(message)
    await bot.start()  # the fixture stops it again


async def test_question_about_the_service_is_answered_then_back_to_the_report(
    emulator: BotApiEmulator, bot: BotProcess
) -> None:
    user = emulator.user(2017, "Rue")
    await begin(user, "young_person")
    await user.wait_for_bot_message(contains="What is happening")
    await user.send_text("is this anonymous")
    answer = await user.wait_for_bot_message(contains="never ask your name")
    assert "Telegram itself knows" in message_text(answer)
    await user.wait_for_bot_message(contains="What is happening")  # asked again, not skipped


async def test_reply_to_reporter_survives_telegram_throttling_and_errors(
    emulator: BotApiEmulator, bot: BotProcess
) -> None:
    user = emulator.user(2018, "Sol")
    emulator.fail_next("sendMessage", status=429, retry_after=1, chat_id=user.id)
    emulator.fail_next("sendMessage", status=500, chat_id=user.id)
    await user.send_text("/start")
    await user.wait_for_bot_message(contains="Who is this about?", timeout=15)
    assert [r.status for r in emulator.requests_for("sendMessage")][:2] == [429, 500]
