"""Random Telegram updates of every type, with awkward text, through the real dispatcher.

The bot here is the real one: `build_dispatcher`, the services of `open_services` over a real
SQLite file, and a `Bot` whose every request goes over HTTP to the local Bot API emulator,
which checks it against the Bot API spec and Telegram's limits. Updates are fed with
`dp.feed_update(bot, update, **context)` exactly as `DurablePoller` does.

Whatever arrives, the bot must not fail (no exception out of the dispatcher and nothing
logged at ERROR, which is how its error handler reports a handler that raised), must only
make valid requests, must answer every private message and remove media from the chat, must
never keep a file id, a file's bytes or a reporter's words in the clear, and a reporter who
sent anything at all still gets the welcome after /start.

CI runs a fixed, derandomised set of examples; `SAFEGUARD_FUZZ_EXAMPLES=500` runs more, with
a fresh random seed each time (hypothesis prints the failing example to reproduce it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import string
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiogram import Bot, Dispatcher
from aiogram.types import Update
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bot.config import Settings
from bot.crypto import create_keys
from bot.dialogue.engine import MEDIA_DELETED, clean_text
from bot.runtime import Services, open_services
from bot.telegram.app import build_bot, build_dispatcher
from bot.telegram.notifier import TelegramStaffNotifier
from tests.conftest import FAST_KDF, TEST_PASSPHRASE, TEST_STAFF
from tests.emulator import DEFAULT_TOKEN, BotApiEmulator, BotApiSpec, ChatState, StoredFile

SPEC = BotApiSpec.load()
JsonDict = dict[str, Any]

# ------------------------------------------------------------------------------------- knobs

_EXTRA = os.environ.get("SAFEGUARD_FUZZ_EXAMPLES")
EXAMPLES = int(_EXTRA) if _EXTRA else 120
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not _EXTRA,  # CI: the same examples every run; locally: explore
    database=None,
    print_blob=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
        HealthCheck.function_scoped_fixture,
    ],
)

# ------------------------------------------------------------------------------------- people

BOT_USERNAME = "safeguard_test_bot"
STAFF_CHAT_ID = -1001000000001
STAFF = {5001: "Sam", 5002: "Ash"}
REPORTERS = [2001, 2002, 2003]  # a small pool, so conversations go on across updates
UNKNOWN_GROUPS = [-1002000000002, -4000000003]
CHANNELS = [-1003000000004]
WELCOME_MARK = "call 999"  # in the welcome (and help); the welcome comes first after /start

COMMANDS = ["start", "help", "exit", "leave", "stop", "followup", "staff"]
STAFF_COMMANDS = ["queue", "case", "reply", "note", "close", "reopen", "oncall", "handover"]
OUTCOMES = ["resolved", "referred", "no_action", "duplicate", "no further action", "RESOLVED"]
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ALNUM = string.ascii_letters + string.digits

# What Telegram never lets through: surrogates (not valid in JSON/UTF-8).
any_char = st.characters(exclude_categories=("Cs",))
AWKWARD = ["\u200f", "\u202e", "\u202c", "\u200b", "\u200d", "\ufeff", "\x00", "\x1b", "\x7f"]
AWKWARD += ["\u2028", "\n", "\t", "\r", " ", "&", "<", ">", '"', "'", ";", "&amp;", "<b>", "</i>"]
awkward_piece = st.sampled_from([*AWKWARD, "\U0001f600"])


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def clip_utf16(text: str, limit: int) -> str:
    """Telegram's limits count UTF-16 code units: no message it delivers is longer."""
    while utf16_len(text) > limit:
        text = text[: len(text) - max(1, (utf16_len(text) - limit) // 2)]
    return text


def _long_text(seed: int, kind: str, limit: int) -> str:
    """A message at (or near) Telegram's length limit, built from a seed (drawing 4096
    characters one by one would make hypothesis slow)."""
    rng = random.Random(seed)
    if kind == "one_char":
        return rng.choice("x\u05d0\u202e&<é😀 ") * limit
    if kind == "astral":
        pool = [chr(c) for c in range(0x1F300, 0x1F64F)] + [" ", "\U00010348"]
    elif kind == "html":
        pool = ["<", ">", "&", "&amp;", "<b>", "</b>", " ", "x", "\n", "&lt;"]
    else:  # mixed: a bit of everything, including right-to-left and control characters
        pool = [*string.printable, "\u200f", "\u202e", "\u05d0", "é", "ß", "😀", "\x00", "\u2028"]
    text = "".join(rng.choice(pool) for _ in range(limit))
    return clip_utf16(text, limit)


def texts(limit: int = 4096) -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(any_char, max_size=80),
        st.lists(st.one_of(awkward_piece, any_char), max_size=40).map(lambda p: "".join(p) * 3),
        st.sampled_from(
            [
                "",
                " ",
                " \n\t \u3000",
                "\u200f",
                "\u202e",
                "\u200b\u202e ",
                "\u200f\u202etxet sdrawkcab\u202c",
                "<b>he</b> & his mates",
                "&amp; &lt; &#x3c; &#0; &bogus;",
                "\x00\x01\x1f\x7f",
                "yes",
                "no",
                "13",
                "me",
                "a man at the park gave me weed",
                "someone is hurting me right now",
                "is this anonymous?",
            ]
        ),
        st.builds(
            _long_text,
            st.integers(0, 2**32),
            st.sampled_from(["one_char", "astral", "html", "mixed"]),
            st.sampled_from([limit, limit - 1, limit // 2]),
        ),
    ).map(lambda t: clip_utf16(t, limit))


references = st.one_of(
    st.builds(
        lambda a, b, c: f"{a}-{b}-{c}",
        *[st.text(st.sampled_from(CROCKFORD), min_size=4, max_size=4)] * 3,
    ),
    st.text(st.sampled_from(CROCKFORD + "ilou-"), max_size=16),
    st.text(any_char, max_size=20),
)


@st.composite
def command_texts(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from(COMMANDS + STAFF_COMMANDS))
    if draw(st.booleans()):
        name = name.upper() if draw(st.booleans()) else name
    mention = draw(st.sampled_from(["", "", f"@{BOT_USERNAME}", "@some_other_bot"]))
    args = draw(
        st.one_of(
            st.just(""),
            texts(200),
            references,
            st.builds(lambda r, b: f"{r} {b}", references, texts(300)),
            st.builds(lambda r, o: f"{r} {o}", references, st.sampled_from(OUTCOMES)),
            st.sampled_from(["Sam", "ash", "SAM ", "nobody", "Sam Ash"]),
        )
    )
    sep = draw(st.sampled_from([" ", "  ", "\n", " \u200f"])) if args else ""
    return clip_utf16(f"/{name}{mention}{sep}{args}", 4096)


# ------------------------------------------------------------------------------------- objects


def user_obj(user_id: int, first_name: str, username: str | None) -> JsonDict:
    user: JsonDict = {"id": user_id, "is_bot": False, "first_name": first_name or "x"}
    if username:
        user["username"] = username
    return user


usernames = st.one_of(st.none(), st.text(st.sampled_from(ALNUM), min_size=5, max_size=12)).map(
    lambda n: f"fuzz_{n}" if n else None
)


@st.composite
def users(draw: st.DrawFn, *, staff: bool = True) -> JsonDict:
    pools = [st.sampled_from(REPORTERS), st.integers(1, 2**40)]
    if staff:
        pools.insert(1, st.sampled_from(sorted(STAFF)))
    user_id = draw(st.one_of(*pools))
    name = draw(st.text(any_char, min_size=1, max_size=64))
    return user_obj(user_id, name, draw(usernames))


def private_chat(user: JsonDict) -> JsonDict:
    return {"id": user["id"], "type": "private", "first_name": user["first_name"]}


def group_chat(chat_id: int) -> JsonDict:
    kind = "supergroup" if str(chat_id).startswith("-100") else "group"
    return {"id": chat_id, "type": kind, "title": f"group {chat_id}"}


def channel_chat(chat_id: int) -> JsonDict:
    return {"id": chat_id, "type": "channel", "title": f"channel {chat_id}"}


MEDIA_KINDS = [
    "photo",
    "video",
    "voice",
    "audio",
    "document",
    "sticker",
    "animation",
    "video_note",
    "location",
    "contact",
    "poll",
    "dice",
    "venue",
    "live_photo",
    "story",
    "web_app_data",
    "new_chat_title",
]
CAPTIONED = ("photo", "video", "voice", "audio", "document", "animation", "live_photo")


def media_of(kind: str, seed: int, words: str = "", caption: str | None = None) -> JsonDict:
    """Message content of one kind that is not plain text; numbers and ids come from `seed`,
    names and titles are `words`."""
    rng = random.Random(seed)
    token = "".join(rng.choice(ALNUM) for _ in range(rng.randint(8, 24)))
    base = {
        "file_id": f"FZID{token}",
        "file_unique_id": f"FZUQ{token}",
        "file_size": rng.randint(1, 20_000_000),
    }
    wh = {"width": rng.randint(1, 4096), "height": rng.randint(1, 4096)}
    location = {"latitude": rng.uniform(-90, 90), "longitude": rng.uniform(-180, 180)}
    content: JsonDict
    if kind == "photo":
        thumb = {**base, "file_id": base["file_id"] + "s", **wh}
        content = {"photo": [thumb, {**base, **wh}]}
    elif kind in ("video", "animation", "live_photo"):
        content = {kind: {**base, **wh, "duration": rng.randint(0, 3600)}}
    elif kind in ("voice", "audio"):
        content = {kind: {**base, "duration": rng.randint(0, 3600)}}
    elif kind == "document":
        content = {"document": {**base, "file_name": words or "f.pdf"}}
    elif kind == "video_note":
        content = {"video_note": {**base, "length": 240, "duration": 5}}
    elif kind == "sticker":
        flags = {"type": "regular", "is_animated": False, "is_video": False, "emoji": "😀"}
        content = {"sticker": {**base, **wh, **flags}}
    elif kind == "location":
        content = {"location": location}
    elif kind == "venue":
        venue = {"location": location, "title": words or "t", "address": words[::-1] or "a"}
        content = {"location": location, "venue": venue}
    elif kind == "contact":
        phone = "+44" + "".join(rng.choice(string.digits) for _ in range(10))
        content = {"contact": {"phone_number": phone, "first_name": words or "x"}}
    elif kind == "poll":
        options = [
            {"persistent_id": str(i), "text": f"{words[:90]} {i}", "voter_count": 0}
            for i in range(rng.randint(2, 4))
        ]
        poll = {
            "id": str(rng.randint(1, 2**62)),
            "question": words or "?",
            "options": options,
            "total_voter_count": 0,
            "is_closed": False,
            "is_anonymous": True,
            "type": "regular",
            "allows_multiple_answers": False,
            "allows_revoting": False,
            "members_only": False,
        }
        content = {"poll": poll}
    elif kind == "dice":
        content = {"dice": {"emoji": "🎲", "value": rng.randint(1, 6)}}
    elif kind == "story":
        content = {"story": {"chat": group_chat(-1009), "id": rng.randint(1, 999)}}
    elif kind == "web_app_data":
        content = {"web_app_data": {"data": words, "button_text": "open"}}
    else:
        content = {"new_chat_title": words or "t"}
    if kind in CAPTIONED and caption is not None:
        content["caption"] = caption
    return content


media_content = st.builds(
    media_of,
    st.sampled_from(MEDIA_KINDS),
    st.integers(0, 2**32),
    texts(100),
    st.none() | texts(1024),
)


@st.composite
def text_content(draw: st.DrawFn) -> JsonDict:
    text = draw(st.one_of(texts(), command_texts()).filter(bool))  # never empty in Telegram
    content: JsonDict = {"text": text}
    if text.startswith("/"):
        word = text.split()[0] if text.split() else text
        content["entities"] = [{"type": "bot_command", "offset": 0, "length": utf16_len(word)}]
    return content


@st.composite
def messages(draw: st.DrawFn, where: str | None = None) -> JsonDict:
    """A message as Telegram sends it; `where` is private, staff, group or channel."""
    where = where or draw(st.sampled_from(["private"] * 5 + ["staff", "staff", "group", "channel"]))
    sender = draw(users())
    message: JsonDict = {
        "message_id": draw(st.integers(1, 2**31 - 1)),
        "date": int(time.time()) - draw(st.integers(0, 86_400)),
    }
    if where == "channel":
        message["chat"] = channel_chat(draw(st.sampled_from(CHANNELS)))
        message["sender_chat"] = message["chat"]
    else:
        message["from"] = sender
        if where == "private":
            message["chat"] = private_chat(sender)
        elif where == "staff":
            message["chat"] = group_chat(STAFF_CHAT_ID)
        else:
            message["chat"] = group_chat(draw(st.sampled_from(UNKNOWN_GROUPS)))
    if where != "private" and draw(st.integers(0, 9)) == 0:
        message.update({"new_chat_members": [user_obj(123456789, "Bot", BOT_USERNAME)]})
    else:
        message.update(draw(st.one_of(text_content(), media_content)))
    if draw(st.integers(0, 7)) == 0:
        message["forward_origin"] = {
            "type": "hidden_user",
            "date": message["date"],
            "sender_user_name": draw(st.text(any_char, min_size=1, max_size=30)),
        }
    return message


# Callback data: random bytes-ish strings, forged ones that look like the bot's own, and
# "@button:N", which the world swaps for the N-th real button on the message (a real press).
callback_data = st.one_of(
    st.text(any_char, max_size=64),
    st.builds(
        lambda a, s, v, t: f"r:{a}:{s}:{v}:{t}",
        st.sampled_from(["audience", "option", "skip", "back", "send", "exit", "x", ""]),
        st.sampled_from(["what", "danger_now", "@summary", "", "nope"]),
        st.sampled_from(["yes", "no", "young_person", "", "::"]),
        st.one_of(st.integers(-(2**70), 2**70), st.just("x")),
    ),
    st.builds(
        lambda a, e: f"alert:{a}:{e}",
        st.sampled_from(["ack", "take", "", "bogus", "ack:1"]),
        st.one_of(st.integers(-(2**70), 2**70), st.text(any_char, max_size=5)),
    ),
    *[st.builds(lambda n: f"@button:{n}", st.integers(0, 20))] * 4,
).filter(lambda d: len(d.encode()) <= 64)


@st.composite
def callback_queries(draw: st.DrawFn) -> JsonDict:
    sender = draw(st.one_of(users(), users(staff=False)))
    query: JsonDict = {
        "id": str(draw(st.integers(1, 2**62))),
        "from": sender,
        "chat_instance": str(draw(st.integers(-(2**62), 2**62))),
    }
    if draw(st.integers(0, 9)):
        query["data"] = draw(callback_data)
    where = draw(st.sampled_from(["private"] * 6 + ["staff", "staff", "group", "inline"]))
    if where == "inline":
        query["inline_message_id"] = draw(st.text(st.sampled_from(ALNUM), min_size=1))
        return query
    chat = {
        "private": private_chat(sender),
        "staff": group_chat(STAFF_CHAT_ID),
        "group": group_chat(draw(st.sampled_from(UNKNOWN_GROUPS))),
    }[where]
    message_id = draw(st.integers(1, 2**31 - 1))
    if draw(st.integers(0, 4)) == 0:  # a message the bot can no longer see
        query["message"] = {"chat": chat, "message_id": message_id, "date": 0}
    else:  # the world points it at the bot's newest message in that chat, if there is one
        query["message"] = {
            "message_id": message_id,
            "date": int(time.time()),
            "chat": chat,
            "from": user_obj(123456789, "Safeguard Test Bot", BOT_USERNAME),
            "text": "…",
        }
    return query


# Required by aiogram (Bot API 10.3) but not yet in the emulator's spec file (10.1).
NEWER_THAN_SPEC = {"ChatMemberAdministrator": ("can_send_welcome_messages",)}


def _member(status: str, user: JsonDict) -> JsonDict:
    member: JsonDict = {"status": status, "user": user}
    type_name = {
        "administrator": "ChatMemberAdministrator",
        "restricted": "ChatMemberRestricted",
        "creator": "ChatMemberOwner",
        "kicked": "ChatMemberBanned",
    }.get(status)
    if type_name:
        for spec in SPEC.types[type_name].fields.values():
            if spec.required and spec.name not in member:
                member[spec.name] = 0 if spec.types == ("Integer",) else False
        member.update(dict.fromkeys(NEWER_THAN_SPEC.get(type_name, ()), False))
    return member


@st.composite
def chat_member_updates(draw: st.DrawFn) -> JsonDict:
    actor = draw(users())
    where = draw(st.sampled_from(["private", "staff", "group", "group", "channel"]))
    chat = {
        "private": private_chat(actor),
        "staff": group_chat(STAFF_CHAT_ID),
        "group": group_chat(draw(st.sampled_from(UNKNOWN_GROUPS))),
        "channel": channel_chat(CHANNELS[0]),
    }[where]
    statuses = ["member", "administrator", "restricted", "left", "kicked", "creator"]
    subject = user_obj(123456789, "Safeguard Test Bot", BOT_USERNAME)
    if draw(st.booleans()):
        subject = draw(users())
    return {
        "chat": chat,
        "from": actor,
        "date": int(time.time()),
        "old_chat_member": _member(draw(st.sampled_from(statuses)), subject),
        "new_chat_member": _member(draw(st.sampled_from(statuses)), subject),
    }


def _boost_source(user: JsonDict) -> JsonDict:
    return {"source": "premium", "user": user}


@st.composite
def other_payloads(draw: st.DrawFn) -> tuple[str, JsonDict]:
    """Every other update type in the Bot API spec that aiogram knows."""
    kind = draw(
        st.sampled_from(
            [
                "inline_query",
                "chosen_inline_result",
                "chat_join_request",
                "message_reaction",
                "message_reaction_count",
                "poll",
                "poll_answer",
                "pre_checkout_query",
                "shipping_query",
                "business_connection",
                "deleted_business_messages",
                "chat_boost",
                "removed_chat_boost",
                "purchased_paid_media",
                "managed_bot",
            ]
        )
    )
    user = draw(users())
    now = int(time.time())
    chat = draw(
        st.sampled_from(
            [group_chat(STAFF_CHAT_ID), group_chat(UNKNOWN_GROUPS[0]), private_chat(user)]
        )
    )
    some_id = str(draw(st.integers(1, 2**62)))
    payload: JsonDict
    if kind == "inline_query":
        payload = {"id": some_id, "from": user, "query": draw(texts(256)), "offset": ""}
    elif kind == "chosen_inline_result":
        payload = {"result_id": some_id, "from": user, "query": draw(texts(256))}
    elif kind == "chat_join_request":
        payload = {"chat": chat, "from": user, "user_chat_id": user["id"], "date": now}
    elif kind == "message_reaction":
        payload = {
            "chat": chat,
            "message_id": draw(st.integers(1, 2**31 - 1)),
            "user": user,
            "date": now,
            "old_reaction": [],
            "new_reaction": [{"type": "emoji", "emoji": "👍"}],
        }
    elif kind == "message_reaction_count":
        payload = {
            "chat": chat,
            "message_id": draw(st.integers(1, 2**31 - 1)),
            "date": now,
            "reactions": [{"type": {"type": "emoji", "emoji": "🔥"}, "total_count": 2}],
        }
    elif kind == "poll":
        payload = media_of("poll", draw(st.integers(0, 2**32)), draw(texts(100)))["poll"]
    elif kind == "poll_answer":
        payload = {
            "poll_id": some_id,
            "user": user,
            "option_ids": [0],
            "option_persistent_ids": ["0"],
        }
    elif kind == "pre_checkout_query":
        payload = {
            "id": some_id,
            "from": user,
            "currency": "XTR",
            "total_amount": draw(st.integers(1, 10_000)),
            "invoice_payload": draw(texts(128)),
        }
    elif kind == "shipping_query":
        payload = {
            "id": some_id,
            "from": user,
            "invoice_payload": draw(texts(128)),
            "shipping_address": {
                "country_code": "GB",
                "state": "",
                "city": draw(texts(40)),
                "street_line1": draw(texts(40)),
                "street_line2": "",
                "post_code": "AB1 2CD",
            },
        }
    elif kind == "business_connection":
        payload = {
            "id": some_id,
            "user": user,
            "user_chat_id": user["id"],
            "date": now,
            "is_enabled": draw(st.booleans()),
        }
    elif kind == "deleted_business_messages":
        chat = private_chat(user)
        payload = {"business_connection_id": some_id, "chat": chat, "message_ids": [1]}
    elif kind == "chat_boost":
        boost = {
            "boost_id": some_id,
            "add_date": now,
            "expiration_date": now + 86_400,
            "source": _boost_source(user),
        }
        payload = {"chat": chat, "boost": boost}
    elif kind == "removed_chat_boost":
        payload = {
            "chat": chat,
            "boost_id": some_id,
            "remove_date": now,
            "source": _boost_source(user),
        }
    elif kind == "purchased_paid_media":
        payload = {"from": user, "paid_media_payload": draw(texts(128))}
    else:
        bot_user = {"id": 7_000_000_001, "is_bot": True, "first_name": "Child", "username": "c_bot"}
        payload = {"user": user, "bot": bot_user}
    return kind, payload


@st.composite
def updates(draw: st.DrawFn) -> JsonDict:
    """One update of any type (update_id is set by the world when it is fed)."""
    kind = draw(
        st.sampled_from(
            ["message"] * 8
            + ["edited_message"] * 2
            + ["callback_query"] * 5
            + ["channel_post", "edited_channel_post", "my_chat_member", "chat_member"]
            + ["business_message", "edited_business_message", "guest_message", "other"]
        )
    )
    payload: JsonDict
    if kind in ("message", "edited_message"):
        payload = draw(messages())
    elif kind in ("channel_post", "edited_channel_post"):
        payload = draw(messages("channel"))
    elif kind == "callback_query":
        payload = draw(callback_queries())
    elif kind in ("my_chat_member", "chat_member"):
        payload = draw(chat_member_updates())
    elif kind in ("business_message", "edited_business_message", "guest_message"):
        payload = draw(messages("private"))
        if kind != "guest_message":
            payload["business_connection_id"] = str(draw(st.integers(1, 2**40)))
    else:
        kind, payload = draw(other_payloads())
    if kind.startswith("edited"):
        payload["edit_date"] = payload["date"] + 1
    return {"update_id": 0, kind: payload}


# ------------------------------------------------------------------------------------- the world


@dataclass
class Needles:
    """What must never reach the data dir in the clear."""

    file_ids: set[str] = field(default_factory=set)
    media_bytes: set[bytes] = field(default_factory=set)
    words: set[str] = field(default_factory=set)
    usernames: set[str] = field(default_factory=set)

    def collect(self, obj: Any, key: str = "") -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                self.collect(v, k)
        elif isinstance(obj, list):
            for item in obj:
                self.collect(item, key)
        elif isinstance(obj, str):
            if key in ("file_id", "file_unique_id"):
                self.file_ids.add(obj)
            elif key == "username" and obj != BOT_USERNAME:
                self.usernames.add(obj)
            elif key in ("text", "caption", "query", "address", "title", "question"):
                window = clean_text(obj)[:40]
                # Distinctive enough that finding it in the files cannot be a coincidence.
                if len(window) > 12 and len(set(window)) >= 6:
                    self.words.add(window)


class ErrorLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class World:
    """The bot, its services over a real data dir, and the emulator, on one event loop."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.stack = contextlib.AsyncExitStack()
        self.needles = Needles()
        self.fed: Counter[tuple[str, str]] = Counter()
        self.errors = ErrorLog()
        self._update_ids = iter(range(1, 10**9))
        self.emulator: BotApiEmulator
        self.bot: Bot
        self.dp: Dispatcher
        self.services: Services
        self.context: dict[str, Any]

    async def start(self) -> None:
        self.emulator = await self.stack.enter_async_context(
            BotApiEmulator(bot_username=BOT_USERNAME)
        )
        settings = Settings(
            telegram={"token": DEFAULT_TOKEN, "api_base": self.emulator.base_url},
            staff={"chat_id": STAFF_CHAT_ID, "members": sorted(STAFF)},
            rota={"people": {name: uid for uid, name in STAFF.items()}},
            storage={"data_dir": self.data_dir},
            # Flood control answers less often on purpose (tested in test_flood): keep it out
            # of the way of "every private message is answered".
            flood={"burst": 1000, "per_minute": 6000},
        )
        self.services = await self.stack.enter_async_context(open_services(settings))
        self.bot = build_bot(settings)
        alert_bot = build_bot(settings, for_alerts=True)
        self.stack.push_async_callback(self.bot.session.close)
        self.stack.push_async_callback(alert_bot.session.close)
        self.dp = build_dispatcher(settings)
        s = self.services
        notifier = TelegramStaffNotifier(alert_bot, STAFF_CHAT_ID, s.desk, s.paging)
        # The keyword arguments `run_bot` gives `DurablePoller`, which passes them on.
        self.context = {
            "service": s.reporting,
            "desk": s.desk,
            "paging": s.paging,
            "content": s.content,
            "notifier": notifier,
        }
        staff_chat = self.emulator.group(STAFF_CHAT_ID, "Safeguarding on-call")
        staff_chat.state.bot_status = "member"
        logging.getLogger().addHandler(self.errors)

    async def close(self) -> None:
        logging.getLogger().removeHandler(self.errors)
        await self.stack.aclose()

    # -- making the emulator's state agree with the update ------------------------------------

    def _chat_state(self, chat: JsonDict) -> ChatState:
        emu = self.emulator
        chat_id = int(chat["id"])
        if chat["type"] == "private":
            return emu.user(chat_id, chat.get("first_name") or "x").state
        if chat["type"] == "channel":
            if chat_id not in emu.chats:
                emu.chats[chat_id] = ChatState(chat=dict(chat), bot_status="administrator")
            return emu.chats[chat_id]
        return emu.group(chat_id, chat.get("title") or "group", chat["type"]).state

    def _present(self, state: ChatState) -> None:
        """Telegram delivers a chat's updates only while the bot is in it (or not blocked)."""
        if state.is_private:
            state.bot_status = "member"
            state.started = True
        elif not state.bot_is_member:
            state.bot_status = "administrator" if state.type == "channel" else "member"

    def _register_files(self, obj: Any) -> None:
        """The emulator holds each file, so a bot that fetched one would get real bytes."""
        if isinstance(obj, dict):
            if "file_id" in obj and "file_unique_id" in obj:
                data = f"FUZZ-MEDIA-BYTES-{obj['file_unique_id']}".encode()
                self.emulator.files[obj["file_id"]] = StoredFile(
                    obj["file_id"], obj["file_unique_id"], f"f/{obj['file_id']}", data, "x/y"
                )
                self.needles.media_bytes.add(data)
            for value in obj.values():
                self._register_files(value)
        elif isinstance(obj, list):
            for item in obj:
                self._register_files(item)

    def adopt(self, update: JsonDict) -> JsonDict:
        """Give the update a fresh id and put what it refers to into the emulator's state."""
        update = json.loads(json.dumps(update))
        update["update_id"] = next(self._update_ids)
        kind = next(k for k in update if k != "update_id")
        payload = update[kind]
        self.needles.collect(payload)
        self._register_files(payload)
        chat = payload.get("chat")
        state = self._chat_state(chat) if isinstance(chat, dict) else None
        if state is not None:
            self._present(state)
        if kind in ("message", "channel_post", "business_message", "guest_message"):
            assert state is not None
            content = {k: v for k, v in payload.items() if k not in ("message_id", "chat")}
            sender = content.pop("from", None)
            payload["message_id"] = state.allocate_message_id()
            stored = {"message_id": payload["message_id"], "chat": dict(state.chat), **content}
            if sender is not None:
                stored["from"] = sender
            state.messages[payload["message_id"]] = stored
        elif kind in ("edited_message", "edited_channel_post", "edited_business_message"):
            assert state is not None
            sender_id = (payload.get("from") or {}).get("id")
            own = [
                m
                for m in state.messages.values()
                if (m.get("from") or {}).get("id") == sender_id and "text" in m
            ]
            if own:
                payload["message_id"] = own[-1]["message_id"]
                payload["date"] = own[-1].get("date", payload["date"])
                payload["edit_date"] = payload["date"] + 1
            else:
                payload["message_id"] = state.allocate_message_id()
            state.messages[payload["message_id"]] = dict(payload)
        elif kind == "callback_query":
            self._adopt_callback(payload, update["update_id"])
        elif kind == "my_chat_member" and state is not None:
            state.bot_status = payload["new_chat_member"]["status"]
            if state.is_private and state.bot_status not in ("member", "kicked"):
                state.bot_status = "member"  # in private chats only "member" and "kicked" exist
        return update

    def _adopt_callback(self, query: JsonDict, update_id: int) -> None:
        emu = self.emulator
        # One query in eight is stale, as one delivered again after a restart is: the
        # emulator does not know its id, so answering it fails ("query is too old").
        stale = int(query["id"]) % 8 == 0
        query["id"] = f"{update_id}{query['id']}"  # Telegram never reuses a query id
        if not stale:
            emu.callback_queries[query["id"]] = query
        message = query.get("message")
        if message is None:
            return
        state = self._chat_state(message["chat"])
        if message.get("date") == 0:
            state.messages.pop(message["message_id"], None)  # inaccessible: not in the chat
            return
        ours = [m for m in state.messages.values() if (m.get("from") or {}).get("id") == emu.bot_id]
        if not ours:
            message["message_id"] = state.allocate_message_id()
            state.messages[message["message_id"]] = {**message, "from": dict(emu.bot_user)}
            ours = [state.messages[message["message_id"]]]
        target = ours[-1]
        query["message"] = {k: v for k, v in target.items() if k not in _EMULATOR_KEYS}
        data = query.get("data", "")
        if data.startswith("@button:"):
            buttons = [
                b["callback_data"]
                for row in (target.get("reply_markup") or {}).get("inline_keyboard", [])
                for b in row
                if "callback_data" in b
            ]
            if buttons:
                query["data"] = buttons[int(data.split(":")[1]) % len(buttons)]
                self.fed["real button", ""] += 1

    # -- feeding ------------------------------------------------------------------------------

    async def feed(self, raw: JsonDict) -> Update:
        update = self.adopt(raw)
        parsed = Update.model_validate(update, context={"bot": self.bot})
        self.fed[parsed.event_type, str(getattr(parsed.event, "content_type", ""))] += 1
        await self.dp.feed_update(self.bot, parsed, **self.context)
        return parsed

    def data_blob(self) -> bytes:
        return b"\n".join(p.read_bytes() for p in sorted(self.data_dir.rglob("*")) if p.is_file())

    def sent_to(self, chat_id: int, since: int, method: str = "sendMessage") -> list[JsonDict]:
        return [
            r.params
            for r in self.emulator.requests[since:]
            if r.method == method and r.ok and r.params.get("chat_id") == chat_id
        ]

    def begin(self) -> None:
        """Start an example: what went wrong before belongs to the example before."""
        self.errors.records.clear()
        self.emulator.violations.clear()

    def check(self) -> None:
        """Properties that hold after any sequence of updates."""
        if self.errors.records:
            lines = [f"{r.name} {r.levelname} {r.getMessage()}" for r in self.errors.records]
            failed = "\n".join(r.summary(200) for r in self.emulator.errors[-5:])
            raise AssertionError(
                "logged at ERROR:\n  " + "\n  ".join(lines) + f"\nfailed requests:\n{failed}"
            )
        self.emulator.assert_no_violations()
        for method in ("getFile", "forwardMessage", "copyMessage", "sendPhoto", "sendDocument"):
            assert not self.emulator.requests_for(method), f"the bot called {method}"
        staff_chat = self.emulator.chats[STAFF_CHAT_ID]
        assert not staff_chat.left_by_bot, "the bot left the staff chat"
        blob = self.data_blob()
        found = [n for n in self.needles.file_ids | self.needles.usernames if n.encode() in blob]
        found += [repr(b) for b in self.needles.media_bytes if b in blob]
        for words in self.needles.words:
            forms = {words.encode(), json.dumps(words)[1:-1].encode()}
            if any(form in blob for form in forms):
                found.append(words)
        assert not found, f"kept in the clear in the data dir: {found}"


_EMULATOR_KEYS = frozenset({"raw_text", "raw_caption", "parse_mode", "reply_keyboard"})


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[World, asyncio.Runner]]:
    """One world for the module: `build_dispatcher` attaches the module-level reporter router,
    which aiogram allows once per process. Its data dir is made like the `data_dir` fixture's."""
    data_dir = tmp_path_factory.mktemp("fuzz") / "data"
    create_keys(data_dir, TEST_STAFF, TEST_PASSPHRASE, **FAST_KDF)
    with asyncio.Runner() as runner:
        w = World(data_dir)
        runner.run(w.start())
        try:
            yield w, runner
        finally:
            runner.run(w.close())


def _private_sender(update: Update | JsonDict) -> int | None:
    if isinstance(update, Update):
        message = update.message
        if message and message.chat.type == "private" and message.from_user:
            return message.from_user.id
        return None
    raw = update.get("message")
    if raw and raw["chat"]["type"] == "private" and "from" in raw:
        return int(raw["from"]["id"])
    return None


def every_kind() -> list[JsonDict]:
    """A batch that always runs first: each kind of content in a private chat, a real button,
    a staff command, and messages in an unknown group and a channel."""
    reporter = user_obj(REPORTERS[1], "Kit", "fuzz_kit_name")

    def message(content: JsonDict, chat: JsonDict | None = None, **extra: Any) -> JsonDict:
        body = {"message_id": 1, "date": int(time.time()), **content, **extra}
        body["chat"] = chat or private_chat(reporter)
        return {"update_id": 0, "message": body}

    def command(text: str) -> JsonDict:
        return {"text": text, "entities": [{"type": "bot_command", "offset": 0, "length": 6}]}

    batch = [message(command("/start"), **{"from": reporter})]
    batch += [
        message(media_of(kind, n, "Flat 3, 1 Fuzz Road", "a caption: Flat 3, 1 Fuzz Road"))
        | {"update_id": 0}
        for n, kind in enumerate(MEDIA_KINDS)
    ]
    for update in batch[1:]:
        update["message"]["from"] = reporter
    press = {"id": "1", "from": reporter, "chat_instance": "1", "data": "@button:0"}
    press["message"] = {"message_id": 1, "date": 1, "chat": private_chat(reporter), "text": "…"}
    batch.append({"update_id": 0, "callback_query": press})
    stale = {**press, "id": "8"}  # too old to answer (see `_adopt_callback`)
    batch.append({"update_id": 0, "callback_query": stale})
    staff = user_obj(sorted(STAFF)[0], "Sam", None)
    forged = {**press, "from": staff, "data": f"alert:ack:{2**64}"}  # beyond SQLite's integers
    forged["message"] = {**press["message"], "chat": group_chat(STAFF_CHAT_ID)}
    batch.append({"update_id": 0, "callback_query": forged})
    batch.append(message(command("/queue"), group_chat(STAFF_CHAT_ID), **{"from": staff}))
    hello = {"text": "hello everyone in this group"}
    batch.append(message(hello, group_chat(UNKNOWN_GROUPS[0]), **{"from": reporter}))
    post = {"message_id": 1, "date": 1, "chat": channel_chat(CHANNELS[0]), "text": "news"}
    batch.append({"update_id": 0, "channel_post": post})
    return batch


# ------------------------------------------------------------------------------------- tests


@given(update=updates())
@settings(max_examples=300, deadline=None, derandomize=True, database=None)
def test_generated_updates_are_what_telegram_sends(update: JsonDict) -> None:
    """The strategies themselves: every update matches the Bot API spec, and aiogram reads it."""
    update = {**update, "update_id": 1}
    newer = {name for names in NEWER_THAN_SPEC.values() for name in names}
    issues = SPEC.check_object("Update", update)
    assert [i for i in issues if not any(f"unknown field {n!r}" in i for n in newer)] == []
    assert Update.model_validate(update).event_type != "update"


def test_the_fixed_batch_is_what_telegram_sends() -> None:
    for update in every_kind():
        test_generated_updates_are_what_telegram_sends.hypothesis.inner_test(update)


def test_random_updates_through_the_dispatcher(world: tuple[World, asyncio.Runner]) -> None:
    w, runner = world

    async def run(batch: list[JsonDict]) -> None:
        for raw in batch:
            since = len(w.emulator.requests)
            update = await w.feed(raw)
            sender = _private_sender(update)
            if sender is None:
                continue
            message = update.message
            assert message is not None
            kind = str(getattr(message.content_type, "value", message.content_type))
            assert w.sent_to(sender, since), f"no answer to a {kind} message in a private chat"
            if kind in MEDIA_DELETED:
                state = w.emulator.chats[sender]
                assert message.message_id not in state.messages, f"{kind} left in the chat"
        # Whatever came before, /start (or /help) from a reporter still gets the welcome.
        people = [s for s in map(_private_sender, batch) if s is not None] or REPORTERS[:1]
        for person in dict.fromkeys(people):
            since = len(w.emulator.requests)
            start = {
                "update_id": 0,
                "message": {
                    "message_id": 1,
                    "date": int(time.time()),
                    "chat": {"id": person, "type": "private", "first_name": "x"},
                    "from": user_obj(person, "x", None),
                    "text": "/start",
                    "entities": [{"type": "bot_command", "offset": 0, "length": 6}],
                },
            }
            await w.feed(start)
            said = [p["text"] for p in w.sent_to(person, since)]
            assert said and WELCOME_MARK in said[0], f"/start answered with {said}"

    @FUZZ
    @given(batch=st.lists(updates(), min_size=1, max_size=12))
    @example(batch=every_kind())
    def fuzz(batch: list[JsonDict]) -> None:
        w.begin()
        runner.run(run(batch))
        w.check()

    fuzz()
    w.check()
    # The run went where it should: private chats, media, buttons, groups, staff, every type.
    kinds = {kind for kind, _ in w.fed}
    assert {"message", "callback_query", "my_chat_member", "real button"} <= kinds, w.fed
    # How many kinds the same number of examples reaches depends on what else the run imported:
    # Hypothesis mixes constants found in loaded modules into its choices, even derandomized.
    # This test alone reaches 17 kinds; after the whole unit suite, 13.
    assert len(kinds) >= 12, w.fed
    methods = {r.method for r in w.emulator.requests if r.ok}
    assert {"sendMessage", "deleteMessage", "answerCallbackQuery", "leaveChat"} <= methods
    assert w.sent_to(STAFF_CHAT_ID, 0), "no staff command was answered in the staff chat"


@pytest.mark.parametrize("content", ["venue", "live_photo"])
def test_a_shared_place_or_live_photo_is_removed_like_a_location(
    world: tuple[World, asyncio.Runner], content: str
) -> None:
    """A venue carries a location and an address; a live photo is a photo: both are removed
    from the chat like any other media (content types "venue" and "live_photo")."""
    w, runner = world
    place = {"latitude": 51.5, "longitude": -0.12}
    payload = {
        "venue": {"location": place, "title": "Flat 3", "address": "1 Fuzz Road"},
        "location": place,
    }
    if content == "live_photo":
        payload = {
            "live_photo": {
                "file_id": "FZIDlive",
                "file_unique_id": "FZUQlive",
                "width": 9,
                "height": 9,
                "duration": 2,
            }
        }
    message = {
        "message_id": 1,
        "date": int(time.time()),
        "chat": private_chat(user_obj(REPORTERS[0], "x", None)),
        "from": user_obj(REPORTERS[0], "x", None),
        **payload,
    }
    update = runner.run(w.feed({"update_id": 0, "message": message}))
    assert update.message is not None
    state = w.emulator.chats[REPORTERS[0]]
    assert update.message.message_id not in state.messages, f"{content} left in the chat"
