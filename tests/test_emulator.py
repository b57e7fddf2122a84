"""Tests of the Bot API emulator itself, driven by a real aiogram ``Bot`` over HTTP.

The end-to-end tests trust the emulator to behave like Telegram; these tests pin down the
behaviour they rely on (shapes, limits, long polling, faults) so that a green e2e run means
the bot works, not that the fake is lenient.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiogram import Bot, Dispatcher, F
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.filters import CommandStart
from aiogram.types import (
    BotCommand,
    BufferedInputFile,
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    ReplyParameters,
)

from tests.emulator import NO_ANSWER, BotApiEmulator, HtmlParseError, parse_html, utf16_len

ALICE = 1001


def keyboard(*buttons: tuple[str, str]) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(text=t, callback_data=d)] for t, d in buttons]
    )


@pytest.fixture
async def emulator() -> AsyncIterator[BotApiEmulator]:
    async with BotApiEmulator() as emu:
        yield emu


@pytest.fixture
async def bot(emulator: BotApiEmulator) -> AsyncIterator[Bot]:
    session = AiohttpSession(api=TelegramAPIServer.from_base(emulator.base_url))
    bot = Bot(emulator.token, session=session)
    yield bot
    # AiohttpSession.close() sleeps 0.25 s for TLS shutdown; plain HTTP needs no wait, and
    # across this file that sleep alone would take longer than all the tests.
    inner = session._session
    if inner is not None and not inner.closed:
        await inner.close()


async def raw_call(emulator: BotApiEmulator, method: str, **params: Any) -> tuple[int, Any]:
    """A request the way a non-aiogram client (or a typo) would send it."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{emulator.api_url}/{method}", json=params) as response,
    ):
        return response.status, await response.json()


def assert_spec_shape(emulator: BotApiEmulator, type_name: str, obj: Any) -> None:
    """What the emulator emits must itself satisfy the Bot API spec."""
    assert emulator.spec.check_object(type_name, obj) == []


# ------------------------------------------------------------------ basics


async def test_get_me(emulator: BotApiEmulator, bot: Bot) -> None:
    me = await bot.get_me()
    assert me.id == emulator.bot_id
    assert me.is_bot
    assert me.username == emulator.bot_username
    assert emulator.requests[-1].method == "getMe"
    assert emulator.violations == []


async def test_wrong_token_unknown_method_and_missing_field(emulator: BotApiEmulator) -> None:
    async with aiohttp.ClientSession() as session:
        url = f"{emulator.base_url}/bot1:wrong/getMe"
        async with session.post(url) as response:
            assert response.status == 401
            assert (await response.json())["description"] == "Unauthorized"
    assert await raw_call(emulator, "sendMesage", chat_id=1, text="x") == (
        404,
        {"ok": False, "error_code": 404, "description": "Not Found"},
    )
    status, body = await raw_call(emulator, "sendMessage", chat_id=1)
    assert status == 400
    assert body["description"] == "Bad Request: text is required"
    assert [v.kind for v in emulator.violations] == ["auth", "spec", "spec"]


async def test_unknown_parameter_is_a_violation(emulator: BotApiEmulator) -> None:
    emulator.user(ALICE, "Alice")
    status, body = await raw_call(emulator, "sendMessage", chat_id=ALICE, text="hi", parse_mod="x")
    assert status == 400
    assert "parse_mod" in body["description"]
    assert len(emulator.violations) == 1
    assert emulator.violations[0].method == "sendMessage"
    assert "unknown parameter 'parse_mod'" in emulator.violations[0].description


async def test_nested_typo_in_keyboard_is_a_violation(emulator: BotApiEmulator) -> None:
    emulator.user(ALICE, "Alice")
    markup = {"inline_keyboard": [[{"text": "Yes", "callbak_data": "yes"}]]}
    status, _ = await raw_call(
        emulator, "sendMessage", chat_id=ALICE, text="?", reply_markup=markup
    )
    assert status == 400
    assert any("callbak_data" in v.description for v in emulator.violations)


async def test_form_values_are_decoded_by_declared_type(emulator: BotApiEmulator) -> None:
    """A String field keeps "123"; other fields are JSON-decoded (as aiogram encodes them)."""
    alice = emulator.user(ALICE, "Alice")
    form = aiohttp.FormData()
    form.add_field("chat_id", str(ALICE))
    form.add_field("text", "123")
    form.add_field("reply_markup", json.dumps(keyboard(("OK", "ok")).model_dump(exclude_none=True)))
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{emulator.api_url}/sendMessage", data=form) as response,
    ):
        body = await response.json()
    assert body["ok"], body
    assert body["result"]["text"] == "123"
    assert alice.bot_messages()[0]["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "ok"
    assert emulator.violations == []


async def test_legacy_parameters_sent_by_aiogram_defaults_are_accepted(
    emulator: BotApiEmulator,
) -> None:
    """aiogram adds ``disable_web_page_preview`` (gone from the docs, still accepted by
    Telegram) when link previews are disabled by default, as this project's bot does."""
    emulator.user(ALICE, "Alice")
    session = AiohttpSession(api=TelegramAPIServer.from_base(emulator.base_url))
    defaults = DefaultBotProperties(parse_mode="HTML", link_preview_is_disabled=True)
    async with Bot(emulator.token, session=session, default=defaults) as bot:
        sent = await bot.send_message(ALICE, "<b>See</b> https://example.org")
        assert sent.link_preview_options and sent.link_preview_options.is_disabled
        await bot.edit_message_text("<i>Seen</i>", chat_id=ALICE, message_id=sent.message_id)
    assert emulator.violations == []
    assert emulator.legacy_params == [
        ("sendMessage", "disable_web_page_preview"),
        ("editMessageText", "disable_web_page_preview"),
    ]


# ------------------------------------------------------------------ sendMessage rules


async def test_send_message_with_valid_html(emulator: BotApiEmulator, bot: Bot) -> None:
    alice = emulator.user(ALICE, "Alice")
    sent = await bot.send_message(
        ALICE,
        "\n<b>Report</b> received &amp; <i>stored</i> &lt;safely&gt; &#x1F600;\n",
        parse_mode="HTML",
        protect_content=True,
    )
    assert sent.text == "Report received & stored <safely> 😀"
    assert sent.entities is not None
    assert [(e.type, e.offset, e.length) for e in sent.entities] == [
        ("bold", 0, 6),
        ("italic", 18, 6),
    ]
    stored = alice.bot_messages()[-1]
    assert stored["text"] == sent.text
    assert stored["raw_text"].startswith("\n<b>Report</b>")
    assert stored["has_protected_content"] is True
    assert_spec_shape(emulator, "Message", emulator.requests[-1].result)
    assert emulator.violations == []


async def test_text_length_limit_counts_utf16(emulator: BotApiEmulator, bot: Bot) -> None:
    emulator.user(ALICE, "Alice")
    await bot.send_message(ALICE, "x" * 4096)
    with pytest.raises(TelegramBadRequest, match="message is too long"):
        await bot.send_message(ALICE, "x" * 4097)
    # 2049 emoji are 4098 UTF-16 code units although only 2049 characters.
    with pytest.raises(TelegramBadRequest, match="message is too long"):
        await bot.send_message(ALICE, "😀" * 2049)
    # Tags do not count: the limit applies after entity parsing.
    await bot.send_message(ALICE, "<b>" + "x" * 4096 + "</b>", parse_mode="HTML")
    with pytest.raises(TelegramBadRequest, match="message text is empty"):
        await bot.send_message(ALICE, "<b> </b>", parse_mode="HTML")
    assert [v.kind for v in emulator.violations] == ["limit", "limit", "limit"]


async def test_bad_html_is_rejected(emulator: BotApiEmulator, bot: Bot) -> None:
    emulator.user(ALICE, "Alice")
    with pytest.raises(TelegramBadRequest, match="can't parse entities"):
        await bot.send_message(ALICE, "<b>x", parse_mode="HTML")
    with pytest.raises(TelegramBadRequest, match="can't parse entities"):
        await bot.send_message(ALICE, "Tom & Jerry", parse_mode="HTML")
    with pytest.raises(TelegramBadRequest, match='Unsupported start tag "p"'):
        await bot.send_message(ALICE, "<p>hi</p>", parse_mode="HTML")
    sent = await bot.send_message(ALICE, "Tom &amp; Jerry", parse_mode="HTML")
    assert sent.text == "Tom & Jerry"
    # Without parse_mode the same characters are plain text.
    assert (await bot.send_message(ALICE, "a < b & <b>")).text == "a < b & <b>"
    # Explicit entities win over parse_mode: the text is not parsed as HTML then.
    bold = [{"type": "bold", "offset": 0, "length": 3}]
    status, body = await raw_call(
        emulator, "sendMessage", chat_id=ALICE, text="a<b", parse_mode="HTML", entities=bold
    )
    assert (status, body["result"]["text"]) == (200, "a<b")


@pytest.mark.parametrize(
    ("source", "error"),
    [
        ("<b>x", 'Can\'t find end tag corresponding to start tag "b"'),
        ("<b>x</i>", 'Unmatched end tag at byte offset 4, expected "</b>", found "</i>"'),
        ("x</b>", "Unexpected end tag at byte offset 1"),
        ("1 < 2", 'Unsupported start tag "" at byte offset 2'),
        ("é<div>", 'Unsupported start tag "div" at byte offset 2'),
        ("a<b", "Unclosed start tag at byte offset 1"),
        ('<a href="x>y', "Unclosed start tag at byte offset 0"),
        ('<span class="x">y</span>', 'Tag "span" must have class "tg-spoiler"'),
        ("&nbsp;", 'Unescaped "&" at byte offset 0'),
    ],
)
def test_html_errors_match_telegram(source: str, error: str) -> None:
    with pytest.raises(HtmlParseError) as caught:
        parse_html(source)
    assert str(caught.value).startswith(error)


def test_html_entities_and_offsets() -> None:
    parsed = parse_html(
        '😀 <a href="https://example.org/?a=1&amp;b=2">link</a> '
        '<pre><code class="language-python">x = 1</code></pre> '
        '<span class="tg-spoiler">s</span> <blockquote expandable>q</blockquote> &#65;&quot;'
    )
    assert parsed.text == '😀 link x = 1 s q A"'
    assert parsed.entities == [
        {"offset": 3, "length": 4, "type": "text_link", "url": "https://example.org/?a=1&b=2"},
        {"offset": 8, "length": 5, "type": "pre", "language": "python"},
        {"offset": 14, "length": 1, "type": "spoiler"},
        {"offset": 16, "length": 1, "type": "expandable_blockquote"},
    ]
    assert utf16_len("😀") == 2
    assert parse_html("Tom & Jerry", strict_ampersand=False).text == "Tom & Jerry"


async def test_callback_data_limit(emulator: BotApiEmulator, bot: Bot) -> None:
    emulator.user(ALICE, "Alice")
    await bot.send_message(ALICE, "ok", reply_markup=keyboard(("A", "a" * 64)))
    with pytest.raises(TelegramBadRequest, match="BUTTON_DATA_INVALID"):
        await bot.send_message(ALICE, "too long", reply_markup=keyboard(("A", "a" * 65)))
    with pytest.raises(TelegramBadRequest, match="BUTTON_DATA_INVALID"):
        # 33 two-byte characters: 33 characters but 66 bytes.
        await bot.send_message(ALICE, "bytes", reply_markup=keyboard(("A", "é" * 33)))
    assert len(emulator.violations) == 2


async def test_chat_rules(emulator: BotApiEmulator, bot: Bot) -> None:
    with pytest.raises(TelegramBadRequest, match="chat not found"):
        await bot.send_message(4242, "hello?")
    stranger = emulator.user(2002, "Bob", started=False)
    with pytest.raises(TelegramForbiddenError, match="can't initiate conversation"):
        await bot.send_message(stranger.id, "hi")
    await stranger.send_text("/start")
    await bot.send_message(stranger.id, "hi")
    await stranger.block()
    with pytest.raises(TelegramForbiddenError, match="bot was blocked by the user"):
        await bot.send_message(stranger.id, "still there?")
    emulator.user(ALICE, "Alice")
    with pytest.raises(TelegramBadRequest, match="message to be replied not found"):
        await bot.send_message(ALICE, "re", reply_parameters=ReplyParameters(message_id=99))
    assert emulator.violations == []


# ------------------------------------------------------------------ updates


async def test_get_updates_long_polls_for_user_text(emulator: BotApiEmulator, bot: Bot) -> None:
    alice = emulator.user(ALICE, "Alice", username="alice")
    poll = asyncio.create_task(bot.get_updates(timeout=5))
    await asyncio.sleep(0.2)
    assert not poll.done(), "getUpdates must wait for an update"
    sent = await alice.send_text("/report something happened")
    updates = await asyncio.wait_for(poll, 2)
    assert len(updates) == 1
    message = updates[0].message
    assert message is not None
    assert message.text == "/report something happened"
    assert message.chat.id == ALICE and message.from_user and message.from_user.username == "alice"
    assert message.entities and message.entities[0].type == "bot_command"
    assert message.entities[0].length == len("/report")
    assert_spec_shape(emulator, "Update", emulator.updates[updates[0].update_id])
    assert sent["message_id"] == message.message_id

    assert emulator.pending_updates == 1  # delivered but not confirmed yet
    assert await bot.get_updates(offset=updates[0].update_id + 1, timeout=0) == []
    assert emulator.pending_updates == 0
    assert emulator.confirmed_offset == updates[0].update_id + 1


async def test_user_texts_are_what_clients_can_send(emulator: BotApiEmulator) -> None:
    alice = emulator.user(ALICE, "Alice")
    assert (await alice.send_text("  hello \n"))["text"] == "hello"
    with pytest.raises(AssertionError, match="empty"):
        await alice.send_text(" \n ")
    with pytest.raises(AssertionError, match="split"):
        await alice.send_text("x" * 4097)
    replied = await alice.send_text("about that", reply_to=1)
    assert replied["reply_to_message"]["text"] == "hello"


async def test_allowed_updates_and_duplicates(emulator: BotApiEmulator, bot: Bot) -> None:
    alice = emulator.user(ALICE, "Alice")
    await alice.send_text("one")
    first = await bot.get_updates(timeout=0, allowed_updates=["message"])
    await bot.get_updates(offset=first[-1].update_id + 1, timeout=0)

    emulator.duplicate_update(first[0].update_id)
    again = await bot.get_updates(offset=first[-1].update_id + 1, timeout=0)
    assert [u.update_id for u in again] == [first[0].update_id]
    assert again[0].message and again[0].message.text == "one"
    await bot.get_updates(offset=first[-1].update_id + 1, timeout=0)
    assert emulator.pending_updates == 0

    await alice.block()  # my_chat_member is not in allowed_updates: dropped
    await alice.send_text("two")  # unblocks (my_chat_member again) and writes
    updates = await bot.get_updates(timeout=0)
    assert [u.message.text for u in updates if u.message] == ["two"]
    assert [next(k for k in u if k != "update_id") for u in emulator.dropped_updates] == [
        "my_chat_member",
        "my_chat_member",
    ]


async def test_concurrent_get_updates_conflict(emulator: BotApiEmulator, bot: Bot) -> None:
    first = asyncio.create_task(bot.get_updates(timeout=3))
    await asyncio.sleep(0.1)
    second = asyncio.create_task(bot.get_updates(timeout=0))
    with pytest.raises(Exception, match="terminated by other getUpdates"):
        await asyncio.wait_for(first, 2)
    assert await second == []


# ------------------------------------------------------------------ faults


async def test_fail_next_429_and_500(emulator: BotApiEmulator, bot: Bot) -> None:
    emulator.user(ALICE, "Alice")
    emulator.fail_next("sendMessage", 429, retry_after=3)
    with pytest.raises(TelegramRetryAfter) as caught:
        await bot.send_message(ALICE, "hi")
    assert caught.value.retry_after == 3
    assert emulator.requests[-1].response == {
        "ok": False,
        "error_code": 429,
        "description": "Too Many Requests: retry after 3",
        "parameters": {"retry_after": 3},
    }
    await bot.send_message(ALICE, "hi")  # only the next call failed

    emulator.fail_next("sendMessage", 500, count=2, chat_id=ALICE)
    for _ in range(2):
        with pytest.raises(TelegramServerError):
            await bot.send_message(ALICE, "hi")
    await bot.send_message(ALICE, "hi")
    assert [r.injected for r in emulator.errors] == [True, True, True]
    assert emulator.violations == []


async def test_stall_next_times_the_client_out_before_or_after_telegram_acted(
    emulator: BotApiEmulator, bot: Bot
) -> None:
    alice = emulator.user(ALICE, "Alice")
    # Dropped before Telegram acted: no message, nothing to say
    emulator.stall_next("sendMessage")
    with pytest.raises(TelegramNetworkError, match="timeout"):
        await bot.send_message(ALICE, "lost", request_timeout=1)
    stalled = await emulator.wait_for(lambda: emulator.requests[-1].status == NO_ANSWER)
    assert stalled
    record = emulator.requests[-1]
    assert (record.fault, record.injected, record.answered, record.response) == (
        "stall",
        True,
        False,
        None,
    )
    assert alice.bot_messages() == []
    assert emulator.errors == [record]

    # Acted, answer lost: the message is in the chat, and a retry would double it
    emulator.stall_next("sendMessage", acted=True)
    with pytest.raises(TelegramNetworkError):
        await bot.send_message(ALICE, "landed", request_timeout=1)
    await emulator.wait_for(lambda: emulator.requests[-1].status == NO_ANSWER)
    record = emulator.requests[-1]
    assert record.ok and not record.answered
    assert [m["text"] for m in alice.bot_messages()] == ["landed"]
    assert "[stall, acted]" in record.summary()

    # Shorter than the client waits: a slow answer, done when it is given
    emulator.stall_next("sendMessage", seconds=0.3)
    sent = await bot.send_message(ALICE, "slow", request_timeout=5)
    assert sent.text == "slow" and emulator.requests[-1].answered
    assert [m["text"] for m in alice.bot_messages()] == ["landed", "slow"]
    await bot.send_message(ALICE, "fine")  # only the next call was held
    assert emulator.violations == []


async def test_reset_next_drops_the_connection_without_an_answer(
    emulator: BotApiEmulator, bot: Bot
) -> None:
    alice = emulator.user(ALICE, "Alice")
    emulator.user(1002, "Bob")
    emulator.reset_next("sendMessage", count=2, chat_id=ALICE)
    loop = asyncio.get_running_loop()
    began = loop.time()
    await bot.send_message(1002, "other chat is fine")
    emulator.reset_next("sendMessage", acted=True)
    for _ in range(2):
        with pytest.raises(TelegramNetworkError) as caught:
            await bot.send_message(ALICE, "never sent")
        assert "reset" in str(caught.value) or "Disconnected" in str(caught.value)
    with pytest.raises(TelegramNetworkError):
        await bot.send_message(ALICE, "sent, answer lost")
    assert loop.time() - began < 2  # at once, no timeout waited for
    await emulator.wait_for(lambda: all(r.status is not None for r in emulator.requests))
    resets = [r for r in emulator.requests if r.fault == "reset"]
    assert [(r.status, r.ok) for r in resets] == [
        (NO_ANSWER, False),
        (NO_ANSWER, False),
        (NO_ANSWER, True),
    ]
    assert [m["text"] for m in alice.bot_messages()] == ["sent, answer lost"]
    # The client's next connection works
    assert (await bot.send_message(ALICE, "again")).text == "again"
    emulator.reset_next("*")
    emulator.clear_faults()
    assert (await bot.get_me()).id == emulator.bot_id
    assert emulator.violations == []


async def test_get_updates_stall_and_reset_lose_no_update(
    emulator: BotApiEmulator, bot: Bot
) -> None:
    alice = emulator.user(ALICE, "Alice")
    await alice.send_text("one")
    # The answer with the update is lost (Telegram handed it over): it comes again
    emulator.stall_next("getUpdates", acted=True)
    with pytest.raises(TelegramNetworkError):
        await bot.get_updates(timeout=0, request_timeout=1)
    await emulator.wait_for(lambda: emulator.requests[-1].status == NO_ANSWER)
    assert [u["update_id"] for u in emulator.requests[-1].result] == [1]
    emulator.reset_next("getUpdates")
    with pytest.raises(TelegramNetworkError):
        await bot.get_updates(timeout=0)
    updates = await bot.get_updates(timeout=0)
    assert [u.message.text for u in updates if u.message] == ["one"]
    # A reset before Telegram acts confirms nothing: the offset did not move
    emulator.reset_next("getUpdates")
    with pytest.raises(TelegramNetworkError):
        await bot.get_updates(offset=updates[-1].update_id + 1, timeout=0)
    assert emulator.pending_updates == 1
    assert await bot.get_updates(offset=updates[-1].update_id + 1, timeout=0) == []
    assert emulator.pending_updates == 0


async def test_a_stall_with_no_client_timeout_ends_when_the_emulator_stops() -> None:
    emulator = BotApiEmulator()
    await emulator.start()
    session = AiohttpSession(api=TelegramAPIServer.from_base(emulator.base_url))
    bot = Bot(emulator.token, session=session)
    try:
        emulator.stall_next("getMe")
        call = asyncio.create_task(bot.get_me())
        await emulator.wait_for(lambda: emulator.requests_for("getMe"))
        await asyncio.sleep(0.1)
        assert not call.done()
        await asyncio.wait_for(emulator.stop(), 2)  # does not wait for the client's 60 s
        with pytest.raises(TelegramNetworkError):
            await asyncio.wait_for(call, 2)
    finally:
        await emulator.stop()
        if session._session is not None:
            await session._session.close()


async def test_rate_limits(emulator: BotApiEmulator, bot: Bot) -> None:
    emulator.user(ALICE, "Alice")
    emulator.user(1002, "Bob")
    emulator.set_rate_limits()
    await bot.send_message(ALICE, "one")
    with pytest.raises(TelegramRetryAfter) as caught:
        await bot.send_message(ALICE, "two")
    assert caught.value.retry_after == 1
    await bot.send_message(1002, "other chat is fine")
    await bot.send_chat_action(ALICE, "typing")  # not a message: not limited


# ------------------------------------------------------------------ deleting and editing


async def test_delete_messages(emulator: BotApiEmulator, bot: Bot) -> None:
    alice = emulator.user(ALICE, "Alice")
    mine = await alice.send_text("my report")
    sent = [await bot.send_message(ALICE, f"step {i}") for i in range(3)]
    assert [m.message_id for m in sent] == [2, 3, 4]  # per-chat, increasing

    assert await bot.delete_messages(ALICE, [mine["message_id"], sent[0].message_id, 999])
    assert [m["text"] for m in alice.history()] == ["step 1", "step 2"]
    assert [m["text"] for m in emulator.deleted] == ["my report", "step 0"]

    await bot.delete_message(ALICE, sent[1].message_id)
    with pytest.raises(TelegramBadRequest, match="message to delete not found"):
        await bot.delete_message(ALICE, sent[1].message_id)
    assert [m["text"] for m in alice.bot_messages()] == ["step 2"]


async def test_edits(emulator: BotApiEmulator, bot: Bot) -> None:
    alice = emulator.user(ALICE, "Alice")
    sent = await bot.send_message(ALICE, "Choose", reply_markup=keyboard(("Yes", "y")))
    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await bot.edit_message_text(
            "Choose", chat_id=ALICE, message_id=sent.message_id, reply_markup=keyboard(("Yes", "y"))
        )
    edited = await bot.edit_message_text(
        "<i>Done</i>", chat_id=ALICE, message_id=sent.message_id, parse_mode="HTML"
    )
    assert isinstance(edited, Message)
    assert edited.text == "Done" and edited.reply_markup is None  # keyboard removed
    stored = alice.message(sent.message_id)
    assert stored is not None
    assert (stored["text"], stored["raw_text"]) == ("Done", "<i>Done</i>")
    assert "edit_date" in stored
    await bot.edit_message_reply_markup(
        chat_id=ALICE, message_id=sent.message_id, reply_markup=keyboard(("Again", "a"))
    )
    user_message = await alice.send_text("typo")
    with pytest.raises(TelegramBadRequest, match="message can't be edited"):
        await bot.edit_message_text("x", chat_id=ALICE, message_id=user_message["message_id"])

    await alice.edit_text(user_message["message_id"], "fixed")
    updates = await bot.get_updates(timeout=0)
    assert updates[-1].edited_message and updates[-1].edited_message.text == "fixed"


# ------------------------------------------------------------------ buttons


async def test_press_and_answer_callback_query(emulator: BotApiEmulator, bot: Bot) -> None:
    alice = emulator.user(ALICE, "Alice")
    sent = await bot.send_message(
        ALICE, "Safe?", reply_markup=keyboard(("Yes", "safe:yes"), ("No", "safe:no"))
    )
    query = await alice.press("No")
    assert query["data"] == "safe:no"
    assert query["message"]["message_id"] == sent.message_id

    updates = await bot.get_updates(timeout=0)
    callback = updates[-1].callback_query
    assert isinstance(callback, CallbackQuery)
    assert callback.id == query["id"] and callback.from_user.id == ALICE
    assert_spec_shape(emulator, "Update", emulator.updates[updates[-1].update_id])

    assert await bot.answer_callback_query(callback.id, text="Thanks")
    assert (await alice.wait_for_answer(query))["text"] == "Thanks"
    with pytest.raises(TelegramBadRequest, match="query is too old"):
        await bot.answer_callback_query(callback.id)
    with pytest.raises(TelegramBadRequest, match="query is too old"):
        await bot.answer_callback_query("made-up")

    second = await alice.press("safe:yes")  # by callback_data works too
    with pytest.raises(TelegramBadRequest, match="MESSAGE_TOO_LONG"):
        await bot.answer_callback_query(second["id"], text="x" * 201)

    with pytest.raises(AssertionError, match=r"available buttons: 'Yes' -> 'safe:yes'"):
        await alice.press("Maybe")
    forged = await alice.press_data(sent.message_id, "admin:wipe")
    assert forged["data"] == "admin:wipe"


# ------------------------------------------------------------------ media


async def test_media_round_trip(emulator: BotApiEmulator, bot: Bot) -> None:
    alice = emulator.user(ALICE, "Alice")
    photo = await alice.send_photo("evidence", data=b"jpeg-bytes")
    file = await bot.get_file(photo["photo"][-1]["file_id"])
    downloaded = await bot.download_file(file.file_path or "")
    assert downloaded is not None and downloaded.read() == b"jpeg-bytes"

    sent = await bot.send_document(
        ALICE,
        BufferedInputFile(b"%PDF report", filename="report.pdf"),
        caption="<b>Report</b>",
        parse_mode="HTML",
    )
    assert sent.document and sent.document.file_name == "report.pdf"
    assert sent.caption == "Report"
    assert emulator.files[sent.document.file_id].data == b"%PDF report"
    for helper in (
        alice.send_video,
        alice.send_voice,
        alice.send_sticker,
        alice.send_location,
        alice.send_contact,
    ):
        message = await helper()
        assert_spec_shape(emulator, "Message", message)
    assert emulator.violations == []


# ------------------------------------------------------------------ groups


async def test_groups(emulator: BotApiEmulator, bot: Bot) -> None:
    alice = emulator.user(ALICE, "Alice")
    group = emulator.group(-1001234, "Safeguarding leads")
    with pytest.raises(TelegramForbiddenError, match="not a member of the supergroup chat"):
        await bot.send_message(group.chat_id, "hello")

    await emulator.add_bot_to_group(group, by_user=alice)
    await group.send_text(alice, "just chatting")  # privacy mode: not delivered
    await group.send_text(alice, f"/status@{emulator.bot_username}")
    updates = await bot.get_updates(timeout=0)
    kinds = [next(k for k in u.model_dump(exclude_none=True) if k != "update_id") for u in updates]
    assert kinds == ["my_chat_member", "message", "message"]
    assert (
        updates[0].my_chat_member and updates[0].my_chat_member.new_chat_member.status == "member"
    )
    assert updates[1].message and updates[1].message.new_chat_members
    assert updates[2].message and updates[2].message.text == "/status@safeguard_test_bot"
    for update in updates:
        assert_spec_shape(emulator, "Update", emulator.updates[update.update_id])

    await bot.send_message(group.chat_id, "Hello group")
    assert not group.bot_left
    assert await bot.leave_chat(group.chat_id)
    assert group.bot_left
    with pytest.raises(TelegramForbiddenError, match="bot is not a member"):
        await bot.send_message(group.chat_id, "still here?")


async def test_group_privacy_mode(emulator: BotApiEmulator, bot: Bot) -> None:
    """Like BotFather's default: commands, replies to the bot, mentions and service messages."""
    alice = emulator.user(ALICE, "Alice")
    group = emulator.group(-100777, "Team", type="group")
    await emulator.add_bot_to_group(group, alice)
    ours = await bot.send_message(group.chat_id, "Hi team")
    await group.send_text(alice, "chatter")
    await group.send_text(alice, "/cmd@some_other_bot")
    await group.send_text(alice, "reply to bot", reply_to=ours.message_id)
    await group.send_text(alice, f"hey @{emulator.bot_username}")
    updates = await bot.get_updates(timeout=0)
    texts = [u.message.text for u in updates if u.message and u.message.text]
    assert texts == ["reply to bot", f"hey @{emulator.bot_username}"]
    assert [m["text"] for m in group.history() if "text" in m][:3] == [
        "Hi team",
        "chatter",
        "/cmd@some_other_bot",
    ]


async def test_other_methods(emulator: BotApiEmulator, bot: Bot) -> None:
    alice = emulator.user(ALICE, "Alice", username="alice")
    chat = await bot.get_chat(ALICE)
    assert chat.id == ALICE and chat.username == "alice"
    assert_spec_shape(emulator, "ChatFullInfo", emulator.requests[-1].result)
    member = await bot.get_chat_member(ALICE, ALICE)
    assert member.status == "member"

    await bot.set_my_commands([BotCommand(command="start", description="Begin")])
    assert [c.command for c in await bot.get_my_commands()] == ["start"]
    with pytest.raises(TelegramBadRequest, match="BOT_COMMAND_INVALID"):
        await bot.set_my_commands([BotCommand(command="Bad-Name", description="x")])
    assert await bot.delete_my_commands()
    assert await bot.get_my_commands() == []

    assert await bot.send_chat_action(ALICE, "typing")
    assert await bot.delete_webhook(drop_pending_updates=True)
    since = len(emulator.requests)
    assert await bot.set_my_description("A safe place to report")  # not modelled: true
    request = await emulator.wait_for_request("setMyDescription", since=since)
    assert request.params == {"description": "A safe place to report"}
    assert emulator.unimplemented_calls == [request]

    emulator.set_result("getUserProfilePhotos", {"total_count": 0, "photos": []})
    photos = await bot.get_user_profile_photos(ALICE)
    assert photos.total_count == 0
    copied = await bot.copy_message(ALICE, ALICE, (await alice.send_text("x"))["message_id"])
    assert alice.message(copied.message_id) is not None
    assert await bot.close() and await bot.log_out()
    assert [str(v) for v in emulator.violations] == [
        "[limit] setMyCommands: Bad Request: BOT_COMMAND_INVALID"
    ]


# ------------------------------------------------------------------ helpers for e2e tests


async def test_dispatcher_conversation(emulator: BotApiEmulator, bot: Bot) -> None:
    """The whole loop: aiogram polling, a handler answering, the user waiting and pressing."""
    dp = Dispatcher()

    @dp.message(CommandStart())
    async def start(message: Message) -> None:
        await message.answer(
            "<b>Welcome</b>", parse_mode="HTML", reply_markup=keyboard(("Report", "report"))
        )

    @dp.callback_query(F.data == "report")
    async def report(callback: CallbackQuery) -> None:
        await callback.answer()
        assert isinstance(callback.message, Message)
        await callback.message.edit_text("Tell me what happened.")

    polling = asyncio.create_task(dp.start_polling(bot, handle_signals=False, polling_timeout=1))
    try:
        alice = emulator.user(ALICE, "Alice")
        await alice.send_text("/start")
        welcome = await alice.wait_for_bot_message(contains="Welcome")
        assert welcome["text"] == "Welcome"
        query = await alice.press("Report")
        await alice.wait_for_answer(query)
        edited = await alice.wait_for_edit(welcome["message_id"], contains="what happened")
        assert "reply_markup" not in edited
        request = await emulator.wait_for_request("editMessageText")
        assert request.ok
        with pytest.raises(AssertionError, match=r"(?s)last requests:.*getUpdates"):
            await alice.wait_for_bot_message(contains="never sent", timeout=0.2)
    finally:
        await dp.stop_polling()
        await polling
    emulator.assert_no_violations()
