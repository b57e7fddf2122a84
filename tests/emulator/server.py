"""A local Telegram Bot API server for end-to-end tests, speaking real HTTP on 127.0.0.1.

The real bot process (aiogram, long polling) is pointed at this server instead of
api.telegram.org.  The emulator keeps the state Telegram would keep (chats, message
histories, the update queue, callback queries) and enforces Telegram's rules and limits so
that a bug which would fail in production fails in the test too: invalid HTML, over-long
texts, callback data over 64 bytes, answering a callback query twice, deleting a message
that is gone, writing to a chat the bot has left.  It is also stricter than Telegram where
that catches bugs early: every request is validated against the Bot API spec and unknown
parameters are rejected.

Test code plays the users through :class:`~tests.emulator.actors.SimUser` and
:class:`~tests.emulator.actors.SimGroup` (created with :meth:`BotApiEmulator.user` and
:meth:`BotApiEmulator.group`), all in the same event loop as the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import inspect
import itertools
import json
import math
import re
import socket
import struct
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web

from .html import HtmlParseError, parse_html, trim_text, utf16_len
from .spec import DEFAULT_SPEC_PATH, BotApiSpec, MethodSpec

if TYPE_CHECKING:
    from .actors import SimGroup, SimUser

__all__ = [
    "DEFAULT_TOKEN",
    "EMULATOR_ONLY_KEYS",
    "NO_ANSWER",
    "BotApiEmulator",
    "ChatState",
    "RecordedRequest",
    "StoredFile",
    "TelegramError",
    "UploadedFile",
    "Violation",
    "wire",
]

T = TypeVar("T")
JsonDict = dict[str, Any]

#: A syntactically valid token (aiogram checks the "<digits>:<secret>" shape).
DEFAULT_TOKEN = "123456789:TEST-emulator-token-0123456789abcdef"

TEXT_LIMIT = 4096
CAPTION_LIMIT = 1024
CALLBACK_DATA_LIMIT = 64
CALLBACK_ANSWER_TEXT_LIMIT = 200
DELETE_MESSAGES_LIMIT = 100
COMMANDS_LIMIT = 100

#: Keys the emulator keeps on stored messages for assertions; never sent to the bot.
EMULATOR_ONLY_KEYS = frozenset(
    {"raw_text", "raw_caption", "parse_mode", "reply_keyboard", "disable_notification"}
)

#: Update types Telegram delivers when allowed_updates is empty or was never set.
_NOT_DELIVERED_BY_DEFAULT = frozenset({"chat_member", "message_reaction", "message_reaction_count"})

_CHAT_ACTIONS = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)

_MEDIA_METHODS = {
    "sendphoto": "photo",
    "senddocument": "document",
    "sendvideo": "video",
    "sendaudio": "audio",
    "sendanimation": "animation",
    "sendvoice": "voice",
    "sendvideonote": "video_note",
    "sendsticker": "sticker",
}

#: Message content that copyMessage/forwardMessage carry over to the new message.
_CONTENT_KEYS = (
    "text",
    "entities",
    "raw_text",
    "caption",
    "caption_entities",
    "raw_caption",
    "photo",
    "video",
    "document",
    "audio",
    "animation",
    "voice",
    "video_note",
    "sticker",
    "location",
    "contact",
    "dice",
    "link_preview_options",
)
_CAPTIONED_KINDS = ("photo", "video", "document", "audio", "animation", "voice")

#: The HTTP request being handled, in its handler's task (a reset needs its connection).
_REQUEST: ContextVar[web.Request | None] = ContextVar("emulator_request", default=None)

#: ``RecordedRequest.status`` of a request that got no HTTP answer: the client went away, or
#: the emulator dropped it (injected stall or reset). As nginx logs a client that hung up.
NO_ANSWER = 499

BOT_COMMAND_RE = re.compile(r"^/[A-Za-z0-9_]{1,32}(?:@[A-Za-z0-9_]+)?")
_COMMAND_NAME_RE = re.compile(r"^[a-z0-9_]{1,32}$")


class TelegramError(Exception):
    """An error answer in Telegram's shape; raise it from handlers or ``set_result`` hooks.

    ``violation`` names the kind of bot bug the error reveals ("spec", "limit"); such errors
    are also recorded in :attr:`BotApiEmulator.violations`.  Errors that a correct bot must
    simply handle (message already deleted, chat left, 429) carry no violation.
    """

    def __init__(
        self,
        status: int,
        description: str,
        *,
        retry_after: int | None = None,
        violation: str | None = None,
    ) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.retry_after = retry_after
        self.violation = violation

    def body(self) -> JsonDict:
        """The JSON body Telegram sends for this error."""
        body: JsonDict = {"ok": False, "error_code": self.status, "description": self.description}
        if self.retry_after is not None:
            body["parameters"] = {"retry_after": self.retry_after}
        return body


def bad_request(description: str, *, violation: str | None = None) -> TelegramError:
    """A 400 with Telegram's "Bad Request: " prefix."""
    return TelegramError(400, f"Bad Request: {description}", violation=violation)


def forbidden(description: str) -> TelegramError:
    """A 403 with Telegram's "Forbidden: " prefix."""
    return TelegramError(403, f"Forbidden: {description}")


def wire(message: Mapping[str, Any]) -> JsonDict:
    """A deep copy of a stored message as Telegram would send it (emulator-only keys removed)."""
    return {k: copy.deepcopy(v) for k, v in message.items() if k not in EMULATOR_ONLY_KEYS}


@dataclass
class UploadedFile:
    """A file part of a multipart request (InputFile upload)."""

    name: str
    filename: str
    content_type: str
    data: bytes


@dataclass
class RecordedRequest:
    """One call the bot made; ``status`` is None while it is still running (long polls)."""

    method: str
    params: JsonDict
    time: float
    files: dict[str, UploadedFile] = field(default_factory=dict)
    status: int | None = None
    response: JsonDict | None = None
    injected: bool = False
    implemented: bool = True
    #: "stall" or "reset" for an injected network fault (:meth:`BotApiEmulator.stall_next`,
    #: :meth:`BotApiEmulator.reset_next`), else None.
    fault: str | None = None

    @property
    def answered(self) -> bool:
        """True if an HTTP answer went back to the client (False while pending, when the
        client gave up, and for an injected stall or reset)."""
        return self.status is not None and self.status != NO_ANSWER

    @property
    def ok(self) -> bool:
        """True if the emulator answered with ``ok: true``."""
        return bool(self.response and self.response.get("ok"))

    @property
    def result(self) -> Any:
        """The ``result`` of a successful call (None otherwise)."""
        return self.response.get("result") if self.response else None

    @property
    def description(self) -> str | None:
        """The error description of a failed call (None otherwise)."""
        return self.response.get("description") if self.response else None

    def summary(self, width: int = 60) -> str:
        """One line for failure dumps: time, method, shortened params and outcome."""
        stamp = time.strftime("%H:%M:%S", time.localtime(self.time))
        stamp += f".{int((self.time % 1) * 1000):03d}"
        parts = []
        for key, value in self.params.items():
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            if len(text) > width:
                text = text[: width - 1] + "…"
            parts.append(f"{key}={text!r}" if isinstance(value, str) else f"{key}={text}")
        outcome = "pending" if self.status is None else str(self.status)
        if self.status and self.status != 200:
            outcome += f" {self.description}"
        if self.fault:
            acted = "acted" if self.ok else "not acted"
            outcome += f" [{self.fault}, {acted}]"
        return f"{stamp} {self.method}({', '.join(parts)}) -> {outcome}"


@dataclass
class Violation:
    """A request that broke the spec or a Telegram limit; tests assert there are none."""

    method: str
    description: str
    params: JsonDict
    kind: str
    time: float = field(default_factory=time.time)

    def __str__(self) -> str:
        return f"[{self.kind}] {self.method}: {self.description}"


@dataclass
class StoredFile:
    """A file known to the emulator (sent by a simulated user or uploaded by the bot)."""

    file_id: str
    file_unique_id: str
    file_path: str
    data: bytes
    mime_type: str
    file_name: str | None = None


@dataclass
class ChatState:
    """What Telegram knows about one chat: the chat object, its messages and the bot's status.

    ``messages`` holds the live (not deleted) messages by id in sending order, including the
    emulator-only keys listed in :data:`EMULATOR_ONLY_KEYS`.
    """

    chat: JsonDict
    bot_status: str = "member"
    started: bool = True
    messages: dict[int, JsonDict] = field(default_factory=dict)
    deleted: list[JsonDict] = field(default_factory=list)
    next_message_id: int = 1
    reply_keyboard: JsonDict | None = None
    members: set[int] = field(default_factory=set)
    admins: set[int] = field(default_factory=set)
    edit_seq: dict[int, int] = field(default_factory=dict)
    action_seq: int = 0
    action_message_id: int = 0
    left_by_bot: bool = False

    @property
    def id(self) -> int:
        return int(self.chat["id"])

    @property
    def type(self) -> str:
        return str(self.chat["type"])

    @property
    def is_private(self) -> bool:
        return self.type == "private"

    @property
    def bot_is_member(self) -> bool:
        return self.bot_status in ("member", "administrator", "creator")

    def allocate_message_id(self) -> int:
        """Message ids are per chat and strictly increasing, as the bot observes them."""
        message_id = self.next_message_id
        self.next_message_id += 1
        return message_id


@dataclass
class _QueuedUpdate:
    update: JsonDict
    redelivery: bool = False
    delivered: bool = False

    @property
    def update_id(self) -> int:
        return int(self.update["update_id"])

    @property
    def kind(self) -> str:
        return next(k for k in self.update if k != "update_id")


@dataclass
class _Fault:
    method: str
    status: int
    remaining: int
    retry_after: int
    chat_id: int | str | None
    description: str | None
    kind: str = "status"  # "status" (an error answer), "stall" or "reset" (no answer)
    acted: bool = False
    seconds: float | None = None


@dataclass
class _RateLimits:
    enabled: bool = False
    per_second: int = 30
    per_private_chat_per_second: int = 1
    per_group_per_minute: int = 20


Handler = Callable[[RecordedRequest], Any]


class BotApiEmulator:
    """Telegram's Bot API server plus the humans using it, for one test.

    Start it with ``async with BotApiEmulator() as emulator`` (or ``await start()``), point the
    bot at :attr:`base_url`, and drive the conversation through :meth:`user` and
    :meth:`group`.  Everything the bot did is in :attr:`requests`; everything it did wrong
    is in :attr:`violations`.
    """

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        spec_path: Path | str = DEFAULT_SPEC_PATH,
        *,
        bot_username: str = "safeguard_test_bot",
        bot_first_name: str = "Safeguard Test Bot",
        group_privacy: bool = True,
        strict_html_ampersand: bool = True,
    ) -> None:
        """Create a stopped emulator.

        ``group_privacy`` mirrors BotFather's default privacy mode: in groups the bot only
        receives commands, replies to its messages, mentions and service messages (unless
        it is an admin).  ``strict_html_ampersand`` rejects a bare ``&`` in HTML texts,
        which Telegram would accept (see :mod:`tests.emulator.html`).
        """
        bot_id, _, _ = token.partition(":")
        if not bot_id.isdigit():
            raise ValueError("a bot token looks like '<bot id>:<secret>'")
        self.token = token
        self.spec = BotApiSpec.load(spec_path)
        self.bot_id = int(bot_id)
        self.bot_username = bot_username
        self.group_privacy = group_privacy
        self.strict_html_ampersand = strict_html_ampersand
        self.bot_user: JsonDict = {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": bot_first_name,
            "username": bot_username,
        }

        self.requests: list[RecordedRequest] = []
        self.violations: list[Violation] = []
        #: Messages the bot deleted, in deletion order (copies with emulator-only keys).
        self.deleted: list[JsonDict] = []
        #: Every update ever created, by update_id (what ``duplicate_update`` copies from).
        self.updates: dict[int, JsonDict] = {}
        #: Updates discarded because their type was not in the bot's ``allowed_updates``.
        self.dropped_updates: list[JsonDict] = []
        #: Callback queries issued to the bot, by id, and the bot's answers to them.
        self.callback_queries: dict[str, JsonDict] = {}
        self.callback_answers: dict[str, JsonDict] = {}
        #: (method, parameter) of legacy parameters the bot used (see LEGACY_PARAMETERS).
        self.legacy_params: list[tuple[str, str]] = []
        #: Tracebacks of exceptions inside the emulator (also reported as violations).
        self.internal_errors: list[str] = []
        #: setMyCommands state, keyed by (scope as JSON, language_code).
        self.commands: dict[tuple[str, str], list[JsonDict]] = {}
        self.webhook_url = ""
        self.chats: dict[int, ChatState] = {}
        self.files: dict[str, StoredFile] = {}
        self.confirmed_offset = 0

        self._users: dict[int, SimUser] = {}
        self._groups: dict[int, SimGroup] = {}
        self._queue: list[_QueuedUpdate] = []
        self._allowed_updates: frozenset[str] | None = None
        self._update_ids = itertools.count(1)
        self._callback_ids = itertools.count(1)
        self._file_ids = itertools.count(1)
        self._seq_counter = itertools.count(1)
        self._updates_changed = asyncio.Event()
        self._activity = asyncio.Event()
        self._poll_generation = 0
        self._faults: list[_Fault] = []
        self._stopping = asyncio.Event()
        self._rate_limits = _RateLimits()
        self._rate_windows: dict[int | None, deque[float]] = {}
        self._overrides: dict[str, Any] = {}
        self._closing = False
        self._runner: web.AppRunner | None = None
        self.base_url = ""
        self._handlers: dict[str, Handler] = {
            name.lower(): handler
            for name, handler in {
                "getMe": self._get_me,
                "getUpdates": self._get_updates,
                "deleteWebhook": self._delete_webhook,
                "setWebhook": self._set_webhook,
                "getWebhookInfo": self._get_webhook_info,
                "setMyCommands": self._set_my_commands,
                "deleteMyCommands": self._delete_my_commands,
                "getMyCommands": self._get_my_commands,
                "sendMessage": self._send_message,
                "editMessageText": self._edit_message_text,
                "editMessageCaption": self._edit_message_caption,
                "editMessageReplyMarkup": self._edit_message_reply_markup,
                "deleteMessage": self._delete_message,
                "deleteMessages": self._delete_messages,
                "answerCallbackQuery": self._answer_callback_query,
                "leaveChat": self._leave_chat,
                "sendChatAction": self._send_chat_action,
                "getChat": self._get_chat,
                "getChatMember": self._get_chat_member,
                "getChatAdministrators": self._get_chat_administrators,
                "getChatMemberCount": self._get_chat_member_count,
                "getFile": self._get_file,
                "sendLocation": self._send_location,
                "sendContact": self._send_contact,
                "sendDice": self._send_dice,
                "copyMessage": self._copy_message,
                "forwardMessage": self._forward_message,
                "close": self._true,
                "logOut": self._true,
            }.items()
        }
        for method_lower in _MEDIA_METHODS:
            self._handlers[method_lower] = self._send_media

    # ---------------------------------------------------------------- lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Bind the HTTP server (a free port by default) and return its base URL."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle_api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._handle_file)
        # handler_cancellation: a bot process that dies mid long-poll frees its handler.
        self._runner = web.AppRunner(
            app, handle_signals=False, shutdown_timeout=1.0, handler_cancellation=True
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound_host, bound_port = self._runner.addresses[0][:2]
        self.base_url = f"http://{bound_host}:{bound_port}"
        return self.base_url

    async def stop(self) -> None:
        """Release waiting long polls and shut the server down."""
        self._closing = True
        self._stopping.set()
        self._wake_pollers()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> BotApiEmulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def api_url(self) -> str:
        """The method URL prefix the bot uses: ``<base_url>/bot<token>``."""
        return f"{self.base_url}/bot{self.token}"

    # ---------------------------------------------------------------- simulated humans

    def user(
        self,
        user_id: int,
        first_name: str = "Test",
        username: str | None = None,
        language_code: str | None = "en",
        *,
        last_name: str | None = None,
        started: bool = True,
    ) -> SimUser:
        """A simulated user; their private chat with the bot has ``chat_id == user_id``.

        ``started=False`` models someone who never pressed Start: the bot gets 403 "bot can't
        initiate conversation with a user" until they send something.  Asking again for the
        same id returns the same user.
        """
        from .actors import SimUser

        if user_id in self._users:
            return self._users[user_id]
        if user_id <= 0:
            raise ValueError("user ids are positive; negative ids are groups")
        user: JsonDict = {"id": user_id, "is_bot": False, "first_name": first_name}
        chat: JsonDict = {"id": user_id, "type": "private", "first_name": first_name}
        if last_name:
            user["last_name"] = chat["last_name"] = last_name
        if username:
            user["username"] = chat["username"] = username
        if language_code:
            user["language_code"] = language_code
        state = ChatState(chat=chat, started=started)
        self.chats[user_id] = state
        sim = SimUser(self, state, user)
        self._users[user_id] = sim
        return sim

    def group(
        self,
        chat_id: int,
        title: str,
        type: str = "supergroup",
        *,
        username: str | None = None,
    ) -> SimGroup:
        """A group the bot is not yet in; add it with :meth:`add_bot_to_group`."""
        from .actors import SimGroup

        if chat_id in self._groups:
            return self._groups[chat_id]
        if chat_id >= 0:
            raise ValueError("group chat ids are negative in Telegram (e.g. -1001234567890)")
        if type not in ("group", "supergroup"):
            raise ValueError("type must be 'group' or 'supergroup'")
        chat: JsonDict = {"id": chat_id, "type": type, "title": title}
        if username:
            chat["username"] = username
        state = ChatState(chat=chat, bot_status="left")
        self.chats[chat_id] = state
        sim = SimGroup(self, state)
        self._groups[chat_id] = sim
        return sim

    async def add_bot_to_group(
        self, group: SimGroup, by_user: SimUser, *, as_admin: bool = False
    ) -> None:
        """``by_user`` adds the bot: a ``my_chat_member`` update plus the service message."""
        state = group.state
        state.members.add(by_user.id)
        state.left_by_bot = False
        self.change_bot_status(state, by_user.user, "administrator" if as_admin else "member")
        self.store_user_message(state, by_user.user, {"new_chat_members": [dict(self.bot_user)]})
        await asyncio.sleep(0)

    async def remove_bot_from_group(self, group: SimGroup, by_user: SimUser) -> None:
        """``by_user`` kicks the bot: ``my_chat_member`` (status "kicked"); the bot can't post."""
        self.change_bot_status(group.state, by_user.user, "kicked")
        self.store_user_message(
            group.state, by_user.user, {"left_chat_member": dict(self.bot_user)}
        )
        await asyncio.sleep(0)

    # ---------------------------------------------------------------- updates

    def enqueue_update(self, kind: str, payload: JsonDict) -> JsonDict:
        """Queue an update of type ``kind`` (e.g. "message"); returns the update as queued."""
        update_id = next(self._update_ids)
        update: JsonDict = {"update_id": update_id, kind: copy.deepcopy(payload)}
        self.updates[update_id] = update
        self._queue.append(_QueuedUpdate(copy.deepcopy(update)))
        self._wake_pollers()
        self._notify_activity()
        return update

    def duplicate_update(self, update_id: int) -> JsonDict:
        """Queue an identical copy of an update again, as Telegram does after a lost confirm.

        The copy is delivered once even though the bot's offset has moved past its id, so
        the bot's de-duplication (or lack of it) is exercised.
        """
        if update_id not in self.updates:
            raise KeyError(f"no update {update_id}; known: {sorted(self.updates)[-10:]}")
        entry = _QueuedUpdate(copy.deepcopy(self.updates[update_id]), redelivery=True)
        position = next(
            (i for i, queued in enumerate(self._queue) if queued.update_id > update_id),
            len(self._queue),
        )
        self._queue.insert(position, entry)
        self._wake_pollers()
        self._notify_activity()
        return copy.deepcopy(entry.update)

    @property
    def pending_updates(self) -> int:
        """Updates created but not yet confirmed by the bot (Telegram's pending_update_count)."""
        return len(self._queue)

    # ---------------------------------------------------------------- fault injection

    def fail_next(
        self,
        method: str,
        status: int = 429,
        count: int = 1,
        retry_after: int = 1,
        chat_id: int | str | None = None,
        *,
        description: str | None = None,
    ) -> None:
        """Make the next ``count`` calls of ``method`` ("*" for any) fail like Telegram does.

        429 answers "Too Many Requests: retry after N" with ``parameters.retry_after``; 500
        answers "Internal Server Error".  ``chat_id`` restricts the fault to one chat.
        """
        self._faults.append(
            _Fault(method.lower(), status, count, retry_after, chat_id, description)
        )

    def stall_next(
        self,
        method: str,
        count: int = 1,
        *,
        seconds: float | None = None,
        acted: bool = False,
        chat_id: int | str | None = None,
    ) -> None:
        """Hold the next ``count`` calls of ``method`` ("*" for any) without answering: the
        client's timeout fires (aiogram: ``TelegramNetworkError``, "Request timeout error").

        ``acted=False``: Telegram never got to it; nothing happens (a ``sendMessage`` leaves
        no message). ``acted=True``: Telegram did it (the message is in the chat, a
        ``getUpdates`` handed its updates over) and only the answer is lost, so a client that
        retries doubles it. ``seconds=None`` holds until the client hangs up (or the emulator
        stops); a number answers after that many seconds if the client is still waiting (a
        slow answer, doing the call then if it had not acted). The record gets
        ``fault="stall"`` and, if the client hung up, ``status == NO_ANSWER``; its
        ``response`` is what Telegram did but never said (None if it did not act).
        """
        self._faults.append(
            _Fault(method.lower(), NO_ANSWER, count, 0, chat_id, None, "stall", acted, seconds)
        )

    def reset_next(
        self,
        method: str,
        count: int = 1,
        *,
        acted: bool = False,
        chat_id: int | str | None = None,
    ) -> None:
        """Drop the TCP connection of the next ``count`` calls of ``method`` ("*" for any)
        with a reset (RST) instead of an HTTP answer (aiogram: ``TelegramNetworkError``,
        "ClientOSError ... Connection reset by peer" or "ServerDisconnectedError").

        ``acted`` as in :meth:`stall_next`: False, the call is dropped before Telegram acts;
        True, it acted and the connection died before the answer. The record gets
        ``fault="reset"`` and ``status == NO_ANSWER``.
        """
        self._faults.append(
            _Fault(method.lower(), NO_ANSWER, count, 0, chat_id, None, "reset", acted)
        )

    def clear_faults(self) -> None:
        """Forget every fault still waiting to be injected (Telegram is back)."""
        self._faults.clear()

    def set_rate_limits(
        self,
        enabled: bool = True,
        *,
        per_second: int = 30,
        per_private_chat_per_second: int = 1,
        per_group_per_minute: int = 20,
    ) -> None:
        """Enforce Telegram's broadcast limits on send/edit methods (off by default)."""
        self._rate_limits = _RateLimits(
            enabled, per_second, per_private_chat_per_second, per_group_per_minute
        )
        self._rate_windows.clear()

    def set_result(self, method: str, result: Any) -> None:
        """Answer ``method`` with ``result`` (or ``result(request)`` if callable).

        For methods the emulator does not model; a callable may raise :class:`TelegramError`.
        Pass ``None`` to remove the override.
        """
        if result is None:
            self._overrides.pop(method.lower(), None)
        else:
            self._overrides[method.lower()] = result

    # ---------------------------------------------------------------- assertions / waiting

    def requests_for(self, method: str) -> list[RecordedRequest]:
        """Completed and pending requests of one method, oldest first."""
        wanted = method.lower()
        return [r for r in self.requests if r.method.lower() == wanted]

    @property
    def errors(self) -> list[RecordedRequest]:
        """Requests that got an error answer or none (including injected faults); a client
        that hung up on its own (a bot stopped mid long poll) is not an error."""
        return [
            r
            for r in self.requests
            if r.status not in (None, 200, NO_ANSWER) or (r.fault and r.status == NO_ANSWER)
        ]

    @property
    def unimplemented_calls(self) -> list[RecordedRequest]:
        """Valid calls answered with a generic ``true`` because the emulator has no model."""
        return [r for r in self.requests if not r.implemented]

    def assert_no_violations(self) -> None:
        """Fail with every recorded violation listed (use at fixture teardown)."""
        if self.violations:
            listing = "\n".join(f"  {v}" for v in self.violations)
            raise AssertionError(f"the bot broke the Bot API contract:\n{listing}")

    def dump_requests(self, last: int = 10) -> str:
        """The last ``last`` requests, one line each, for failure messages."""
        lines = [r.summary() for r in self.requests[-last:]]
        return "\n".join(f"  {line}" for line in lines) or "  (no requests yet)"

    async def wait_for(
        self,
        predicate: Callable[[], T],
        timeout: float = 5.0,
        description: str | None = None,
    ) -> T:
        """Wait until ``predicate()`` is truthy and return its value.

        The predicate is re-checked after every bot request and every queued update (and at
        least every 50 ms), so waits end as soon as the bot has acted.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = predicate()
            if value:
                return value
            remaining = deadline - loop.time()
            if remaining <= 0:
                name = getattr(predicate, "__name__", "<lambda>")
                what = description or ("the condition" if name == "<lambda>" else name)
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {what}\n"
                    f"last requests:\n{self.dump_requests()}"
                )
            event = self._activity
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), min(remaining, 0.05))

    async def wait_for_request(
        self,
        method: str,
        predicate: Callable[[RecordedRequest], bool] | None = None,
        timeout: float = 5.0,
        *,
        since: int = 0,
    ) -> RecordedRequest:
        """The newest completed ``method`` request matching ``predicate``.

        ``since`` is an index into :attr:`requests` (e.g. ``len(emulator.requests)`` taken
        before an action) so that only requests made after that point count.
        """
        wanted = method.lower()

        def find() -> RecordedRequest | None:
            for request in reversed(self.requests[since:]):
                if request.method.lower() != wanted or request.status is None:
                    continue
                if predicate is None or predicate(request):
                    return request
            return None

        found = await self.wait_for(find, timeout, f"a {method} request")
        assert found is not None
        return found

    # ---------------------------------------------------------------- shared helpers

    def next_seq(self) -> int:
        """A global event counter ordering user actions and bot edits."""
        return next(self._seq_counter)

    def lookup_chat(self, chat_id: Any) -> ChatState | None:
        """The chat for a ``chat_id`` parameter (an id, a numeric string or "@username")."""
        if isinstance(chat_id, bool):
            return None
        if isinstance(chat_id, str):
            stripped = chat_id.strip()
            if stripped.startswith("@"):
                name = stripped[1:].lower()
                return next(
                    (
                        s
                        for s in self.chats.values()
                        if str(s.chat.get("username", "")).lower() == name
                    ),
                    None,
                )
            if stripped.lstrip("-").isdigit():
                chat_id = int(stripped)
            else:
                return None
        if isinstance(chat_id, int | float):
            return self.chats.get(int(chat_id))
        return None

    def store_user_message(
        self,
        state: ChatState,
        sender: JsonDict,
        content: JsonDict,
        *,
        reply_to: int | None = None,
    ) -> JsonDict:
        """Store a message a human sent and deliver it to the bot if Telegram would."""
        message: JsonDict = {
            "message_id": state.allocate_message_id(),
            "from": dict(sender),
            "chat": dict(state.chat),
            "date": int(time.time()),
            **copy.deepcopy(content),
        }
        if reply_to is not None:
            target = state.messages.get(reply_to)
            if target is None:
                raise AssertionError(f"cannot reply to message {reply_to}: not in the chat")
            message["reply_to_message"] = _reply_copy(target)
        state.messages[message["message_id"]] = message
        state.action_seq = self.next_seq()
        state.action_message_id = message["message_id"]
        if self._delivers_to_bot(state, message):
            self.enqueue_update("message", wire(message))
        else:
            self._notify_activity()
        return wire(message)

    def issue_callback_query(
        self, state: ChatState, sender: JsonDict, message_id: int, data: str
    ) -> JsonDict:
        """Queue a ``callback_query`` update with a fresh id, as when a button is pressed."""
        query_id = f"{self.bot_id}{next(self._callback_ids):08d}"
        target = state.messages.get(message_id)
        query: JsonDict = {
            "id": query_id,
            "from": dict(sender),
            "chat_instance": str(abs(hash((self.bot_id, state.id)))),
            "data": data,
        }
        if target is not None:
            query["message"] = wire(target)
        else:  # forged or deleted message: Telegram sends an InaccessibleMessage
            query["message"] = {"chat": dict(state.chat), "message_id": message_id, "date": 0}
        self.callback_queries[query_id] = query
        state.action_seq = self.next_seq()
        state.action_message_id = state.next_message_id - 1
        self.enqueue_update("callback_query", query)
        return copy.deepcopy(query)

    def register_file(
        self,
        kind: str,
        data: bytes,
        *,
        mime_type: str = "application/octet-stream",
        file_name: str | None = None,
    ) -> StoredFile:
        """Store file bytes so the bot can getFile and download them."""
        number = next(self._file_ids)
        extension = Path(file_name).suffix if file_name else ""
        stored = StoredFile(
            file_id=f"EMU{kind.upper()}{number:06d}",
            file_unique_id=f"U{number:06d}",
            file_path=f"{kind}s/file_{number}{extension}",
            data=data,
            mime_type=mime_type,
            file_name=file_name,
        )
        self.files[stored.file_id] = stored
        return stored

    def media_object(
        self, kind: str, stored: StoredFile, options: Mapping[str, Any] | None = None
    ) -> Any:
        """The Telegram object (PhotoSize list, Video, Document, ...) for a stored file."""
        options = options or {}
        base: JsonDict = {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": len(stored.data),
        }
        if kind == "photo":
            thumb = {**base, "file_id": stored.file_id + "_s", "width": 90, "height": 67}
            thumb["file_unique_id"] = stored.file_unique_id + "s"
            return [thumb, {**base, "width": 1280, "height": 960}]
        if kind in ("video", "animation"):
            return {
                **base,
                "width": options.get("width", 1280),
                "height": options.get("height", 720),
                "duration": options.get("duration", 5),
                "mime_type": stored.mime_type,
            }
        if kind in ("voice", "audio"):
            return {**base, "duration": options.get("duration", 3), "mime_type": stored.mime_type}
        if kind == "video_note":
            return {**base, "length": options.get("length", 240), "duration": 5}
        if kind == "sticker":
            sticker = {
                **base,
                "type": "regular",
                "width": 512,
                "height": 512,
                "is_animated": False,
                "is_video": False,
            }
            if options.get("emoji"):
                sticker["emoji"] = options["emoji"]
            return sticker
        document = {**base, "mime_type": stored.mime_type}
        if stored.file_name:
            document["file_name"] = stored.file_name
        return document

    # ---------------------------------------------------------------- HTTP layer

    async def _handle_api(self, request: web.Request) -> web.Response:
        name = request.match_info["method"]
        if request.match_info["token"] != self.token:
            self._add_violation(name, "request with a wrong bot token", {}, "auth")
            return _json_response(TelegramError(401, "Unauthorized").body(), 401)
        method = self.spec.method(name)
        record = RecordedRequest(
            method=method.name if method else name, params={}, time=time.time()
        )
        self.requests.append(record)
        status = 200
        try:
            record.params, record.files = await self._read_params(request, method)
            _REQUEST.set(request)  # this handler's own task: for reset_next
            result = await self._dispatch(record, method)
            body: JsonDict = {"ok": True, "result": result}
        except TelegramError as error:
            if error.violation:
                self._add_violation(
                    record.method, error.description, record.params, error.violation
                )
            body, status = error.body(), error.status
        except asyncio.CancelledError:
            # The client went away (bot stopped mid long poll, its timeout fired) or the
            # emulator dropped the connection (reset_next).
            record.status = NO_ANSWER
            self._notify_activity()
            raise
        except Exception as error:  # a bug in the emulator must fail the test loudly
            description = f"Internal Server Error: emulator bug: {error!r}"
            self.internal_errors.append(traceback.format_exc())
            self._add_violation(record.method, description, record.params, "emulator")
            body, status = TelegramError(500, description).body(), 500
        record.status, record.response = status, body
        self._notify_activity()
        return _json_response(body, status)

    async def _handle_file(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return _json_response(TelegramError(401, "Unauthorized").body(), 401)
        path = request.match_info["path"]
        stored = next((f for f in self.files.values() if f.file_path == path), None)
        if stored is None:
            return _json_response(TelegramError(404, "Not Found").body(), 404)
        return web.Response(body=stored.data, content_type=stored.mime_type)

    async def _read_params(
        self, request: web.Request, method: MethodSpec | None
    ) -> tuple[JsonDict, dict[str, UploadedFile]]:
        """Collect parameters from the query string and a JSON, urlencoded or multipart body."""
        raw: dict[str, Any] = dict(request.query)
        files: dict[str, UploadedFile] = {}
        if request.can_read_body:
            if request.content_type == "application/json":
                try:
                    body = await request.json()
                except ValueError as error:
                    raise bad_request("can't parse JSON body", violation="spec") from error
                if not isinstance(body, dict):
                    raise bad_request("JSON body must be an object", violation="spec")
                raw.update(body)
            elif request.content_type in (
                "application/x-www-form-urlencoded",
                "multipart/form-data",
            ):
                form = await request.post()
                for key, value in form.items():
                    if isinstance(value, web.FileField):
                        files[key] = UploadedFile(
                            key, value.filename, value.content_type, value.file.read()
                        )
                    else:
                        raw[key] = value
        params = {
            key: self.spec.decode_param(method, key, value)
            for key, value in raw.items()
            if value is not None
        }
        if method is not None:
            # A file part named like a field (photo=<file>) means photo="attach://photo".
            for key in files:
                if key in method.fields and key not in params:
                    params[key] = f"attach://{key}"
        return params, files

    async def _dispatch(self, record: RecordedRequest, method: MethodSpec | None) -> Any:
        if method is None:
            raise TelegramError(404, "Not Found", violation="spec")
        problems = self.spec.check_request(method, record.params)
        if problems:
            for problem in problems:
                self._add_violation(record.method, problem.description, record.params, "spec")
            raise TelegramError(problems[0].status, f"Bad Request: {problems[0].description}")
        for name in record.params:
            if name not in method.fields:
                self.legacy_params.append((method.name, name))
        method_lower = method.name.lower()
        fault = self._take_fault(record, method_lower)
        if fault is not None:
            return await self._network_fault(fault, record, method_lower)
        return await self._perform(record, method_lower)

    async def _perform(self, record: RecordedRequest, method_lower: str) -> Any:
        """Do what the method does (rate limit, override or handler) and return its result."""
        self._check_rate_limit(method_lower, record.params)
        override = self._overrides.get(method_lower)
        if override is not None:
            result = override(record) if callable(override) else copy.deepcopy(override)
        else:
            handler = self._handlers.get(method_lower)
            if handler is None:
                record.implemented = False
                return True
            result = handler(record)
        if inspect.isawaitable(result):
            result = await result
        return result

    def _take_fault(self, record: RecordedRequest, method_lower: str) -> _Fault | None:
        """The first injected fault for this call: an error answer is raised here, a stall or
        reset is returned for :meth:`_network_fault`."""
        for fault in self._faults:
            if fault.method not in (method_lower, "*"):
                continue
            if fault.chat_id is not None and str(record.params.get("chat_id")) != str(
                fault.chat_id
            ):
                continue
            fault.remaining -= 1
            if fault.remaining <= 0:
                self._faults.remove(fault)
            record.injected = True
            if fault.kind != "status":
                record.fault = fault.kind
                return fault
            if fault.status == 429:
                raise TelegramError(
                    429,
                    fault.description or f"Too Many Requests: retry after {fault.retry_after}",
                    retry_after=fault.retry_after,
                )
            default = "Internal Server Error" if fault.status >= 500 else "injected failure"
            raise TelegramError(fault.status, fault.description or default)
        return None

    async def _network_fault(
        self, fault: _Fault, record: RecordedRequest, method_lower: str
    ) -> Any:
        """A call that gets no answer: held (stall) or its connection reset, after Telegram
        did it (``acted``) or before. Returns only for a stall that ends while the client
        still waits; otherwise the handler is cancelled when the connection goes."""
        if fault.acted:
            try:
                result = await self._perform(record, method_lower)
                record.response = {"ok": True, "result": result}
            except TelegramError as error:
                if error.violation:
                    self._add_violation(
                        record.method, error.description, record.params, error.violation
                    )
                record.response = error.body()
            self._notify_activity()
        if fault.kind == "stall":
            if fault.seconds is None:
                await self._stopping.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), fault.seconds)
            if not self._stopping.is_set():
                # A slow answer: the client waited long enough to get it.
                if not fault.acted:
                    return await self._perform(record, method_lower)
                if record.response and not record.response.get("ok"):
                    response = record.response
                    raise TelegramError(int(response["error_code"]), response["description"])
                return record.result
        request = _REQUEST.get()
        if request is not None:
            _reset_connection(request)
        # connection_lost cancels this handler (handler_cancellation=True).
        await asyncio.get_running_loop().create_future()
        raise AssertionError("unreachable")

    def _check_rate_limit(self, method_lower: str, params: Mapping[str, Any]) -> None:
        limits = self._rate_limits
        if not limits.enabled or not _is_outgoing_message(method_lower):
            return
        now = time.monotonic()
        windows: list[tuple[deque[float], float, int]] = [
            (self._rate_windows.setdefault(None, deque()), 1.0, limits.per_second)
        ]
        state = self.lookup_chat(params.get("chat_id"))
        if state is not None:
            window = self._rate_windows.setdefault(state.id, deque())
            if state.is_private:
                windows.append((window, 1.0, limits.per_private_chat_per_second))
            else:
                windows.append((window, 60.0, limits.per_group_per_minute))
        for window, span, limit in windows:
            while window and window[0] <= now - span:
                window.popleft()
            if len(window) >= limit:
                retry_after = max(1, math.ceil(window[0] + span - now))
                raise TelegramError(
                    429, f"Too Many Requests: retry after {retry_after}", retry_after=retry_after
                )
        for window, _, _ in windows:
            window.append(now)

    def _add_violation(self, method: str, description: str, params: JsonDict, kind: str) -> None:
        self.violations.append(Violation(method, description, copy.deepcopy(params), kind))

    def _notify_activity(self) -> None:
        self._activity.set()
        self._activity = asyncio.Event()

    def _wake_pollers(self) -> None:
        self._updates_changed.set()
        self._updates_changed = asyncio.Event()

    # ---------------------------------------------------------------- chat rules

    def _target_chat(self, chat_id: Any) -> ChatState:
        """The chat the bot wants to write to, or the error Telegram gives for it."""
        state = self.lookup_chat(chat_id)
        if state is None:
            raise bad_request("chat not found")
        self._check_can_post(state)
        return state

    def _check_can_post(self, state: ChatState) -> None:
        if state.is_private:
            if state.bot_status == "kicked":
                raise forbidden("bot was blocked by the user")
            if not state.started:
                raise forbidden("bot can't initiate conversation with a user")
            return
        kind = "supergroup" if state.type == "supergroup" else "group"
        if state.bot_status == "kicked":
            raise forbidden(f"bot was kicked from the {kind} chat")
        if not state.bot_is_member:
            raise forbidden(f"bot is not a member of the {kind} chat")

    def _delivers_to_bot(self, state: ChatState, message: Mapping[str, Any]) -> bool:
        """Whether Telegram would send this human message to the bot at all."""
        if state.is_private:
            return state.bot_status != "kicked"
        if not state.bot_is_member:
            return False
        if not self.group_privacy or state.bot_status in ("administrator", "creator"):
            return True
        if "text" not in message and "caption" not in message:
            return "new_chat_members" in message or "left_chat_member" in message
        text = str(message.get("text") or message.get("caption") or "")
        command = BOT_COMMAND_RE.match(text)
        if command:
            _, _, addressee = command.group(0).partition("@")
            return not addressee or addressee.lower() == self.bot_username.lower()
        replied = message.get("reply_to_message") or {}
        if replied.get("from", {}).get("id") == self.bot_id:
            return True
        return f"@{self.bot_username}".lower() in text.lower()

    def change_bot_status(self, state: ChatState, actor: JsonDict, new_status: str) -> None:
        """Set the bot's membership in a chat and send the ``my_chat_member`` update."""
        old_status = state.bot_status
        state.bot_status = new_status
        self.enqueue_update(
            "my_chat_member",
            {
                "chat": dict(state.chat),
                "from": dict(actor),
                "date": int(time.time()),
                "old_chat_member": self._member_object(self.bot_user, old_status),
                "new_chat_member": self._member_object(self.bot_user, new_status),
            },
        )

    @staticmethod
    def _member_object(user: JsonDict, status: str) -> JsonDict:
        if status == "administrator":
            rights = dict.fromkeys(
                (
                    "can_be_edited",
                    "is_anonymous",
                    "can_manage_video_chats",
                    "can_promote_members",
                    "can_change_info",
                    "can_post_stories",
                    "can_edit_stories",
                    "can_delete_stories",
                ),
                False,
            )
            rights.update(
                can_manage_chat=True,
                can_delete_messages=True,
                can_restrict_members=True,
                can_invite_users=True,
            )
            return {"status": status, "user": dict(user), **rights}
        if status == "creator":
            return {"status": status, "user": dict(user), "is_anonymous": False}
        if status == "kicked":
            return {"status": status, "user": dict(user), "until_date": 0}
        return {"status": status, "user": dict(user)}

    # ---------------------------------------------------------------- text rules

    def _format(
        self,
        text: str,
        parse_mode: Any,
        entities: Any,
        *,
        limit: int,
        what: str,
    ) -> tuple[str, list[JsonDict]]:
        """Apply parse_mode, trimming and the length limit exactly as Telegram would."""
        mode = str(parse_mode).lower() if parse_mode else ""
        if entities:
            # Explicit entities win: Telegram does not parse the text then.
            mode = ""
        if mode == "html":
            try:
                parsed = parse_html(text, strict_ampersand=self.strict_html_ampersand)
            except HtmlParseError as error:
                raise bad_request(f"can't parse entities: {error}", violation="limit") from error
            plain, found = parsed.text, parsed.entities
            for entity in found:
                if entity["type"] == "text_mention":
                    known = self._users.get(entity["user"]["id"])
                    entity["user"] = (
                        dict(known.user) if known else {**entity["user"], "first_name": "User"}
                    )
        elif mode in ("markdown", "markdownv2"):
            # Not modelled: the text is stored as sent and no entities are produced.
            plain, found = text, []
        elif mode:
            raise bad_request("unsupported parse_mode", violation="spec")
        else:
            plain, found = text, [dict(e) for e in entities or []]
        trimmed = trim_text(plain, found)
        length = utf16_len(trimmed.text)
        if length > limit:
            message = "message is too long" if what == "text" else "message caption is too long"
            raise bad_request(message, violation="limit")
        if what == "text" and length == 0:
            raise bad_request("message text is empty", violation="limit")
        return trimmed.text, trimmed.entities

    def _check_reply_markup(self, markup: Any) -> None:
        if not isinstance(markup, dict) or "inline_keyboard" not in markup:
            return
        for row in markup["inline_keyboard"]:
            for button in row:
                data = button.get("callback_data")
                if data is not None and not (
                    1 <= len(str(data).encode("utf-8")) <= CALLBACK_DATA_LIMIT
                ):
                    raise bad_request("BUTTON_DATA_INVALID", violation="limit")
                if not set(button) - {"text", "icon_custom_emoji_id", "style"}:
                    raise bad_request(
                        "can't parse inline keyboard button: Text buttons are unallowed in the "
                        "inline keyboard",
                        violation="limit",
                    )

    def _send_options(self, state: ChatState, params: Mapping[str, Any]) -> JsonDict:
        """Validate and translate the options every send method shares into message fields."""
        options: JsonDict = {}
        markup = params.get("reply_markup")
        if markup is not None:
            self._check_reply_markup(markup)
            if "inline_keyboard" in markup:
                options["reply_markup"] = copy.deepcopy(markup)
            else:
                options["reply_keyboard"] = copy.deepcopy(markup)
        reply = params.get("reply_parameters")
        if reply is None and params.get("reply_to_message_id") is not None:  # legacy form
            reply = {
                "message_id": params["reply_to_message_id"],
                "allow_sending_without_reply": params.get("allow_sending_without_reply", False),
            }
        if reply is not None:
            source = state
            if reply.get("chat_id") is not None:
                source = self.lookup_chat(reply["chat_id"]) or state
            target = source.messages.get(int(reply["message_id"]))
            if target is not None:
                options["reply_to_message"] = _reply_copy(target)
            elif not reply.get("allow_sending_without_reply"):
                raise bad_request("message to be replied not found")
        if params.get("protect_content"):
            options["has_protected_content"] = True
        if params.get("disable_notification"):
            options["disable_notification"] = True
        if params.get("parse_mode"):
            options["parse_mode"] = params["parse_mode"]
        return options

    def _store_bot_message(
        self, state: ChatState, content: JsonDict, options: JsonDict
    ) -> JsonDict:
        message: JsonDict = {
            "message_id": state.allocate_message_id(),
            "from": dict(self.bot_user),
            "chat": dict(state.chat),
            "date": int(time.time()),
        }
        message.update(content)
        message.update(options)
        keyboard = options.get("reply_keyboard")
        if keyboard is not None:
            state.reply_keyboard = None if keyboard.get("remove_keyboard") else keyboard
        state.messages[message["message_id"]] = message
        return wire(message)

    def _editable_message(self, params: Mapping[str, Any]) -> tuple[ChatState, JsonDict]:
        if params.get("inline_message_id") is not None:
            raise bad_request("MESSAGE_ID_INVALID")  # inline mode is not emulated
        if params.get("chat_id") is None or params.get("message_id") is None:
            raise bad_request("message identifier is not specified", violation="spec")
        state = self._target_chat(params["chat_id"])
        message = state.messages.get(int(params["message_id"]))
        if message is None:
            raise bad_request("message to edit not found")
        if message["from"]["id"] != self.bot_id:
            raise bad_request("message can't be edited")
        return state, message

    def _apply_edit(
        self, state: ChatState, message: JsonDict, changes: JsonDict, params: Mapping[str, Any]
    ) -> JsonDict:
        """Apply an edit unless it changes nothing (Telegram answers "not modified" then)."""
        markup = params.get("reply_markup")
        if markup is not None:
            self._check_reply_markup(markup)
        # An edit without reply_markup removes the inline keyboard, as in Telegram.
        changes = {**changes, "reply_markup": copy.deepcopy(markup)}
        if all(message.get(key) == value for key, value in changes.items()):
            raise bad_request(
                "message is not modified: specified new message content and reply markup are "
                "exactly the same as a current content and reply markup of the message"
            )
        for key, value in changes.items():
            if value is None or value == []:
                message.pop(key, None)
            else:
                message[key] = value
        message["edit_date"] = int(time.time())
        state.edit_seq[message["message_id"]] = self.next_seq()
        return wire(message)

    def _resolve_input_file(self, kind: str, value: Any, record: RecordedRequest) -> StoredFile:
        if not isinstance(value, str):
            raise bad_request(f"wrong type of the {kind} field", violation="spec")
        if value.startswith("attach://"):
            part = record.files.get(value.removeprefix("attach://"))
            if part is None:
                raise bad_request(f"file {value} is not in the request", violation="spec")
            return self.register_file(
                kind,
                part.data,
                mime_type=part.content_type or "application/octet-stream",
                file_name=part.filename,
            )
        if value in self.files:
            return self.files[value]
        if value.startswith(("http://", "https://")):
            name = value.rsplit("/", 1)[-1] or None
            return self.register_file(kind, b"", file_name=name)
        raise bad_request("wrong file identifier/HTTP URL specified")

    # ---------------------------------------------------------------- method handlers

    def _true(self, record: RecordedRequest) -> bool:
        return True

    def _get_me(self, record: RecordedRequest) -> JsonDict:
        return {
            **self.bot_user,
            "can_join_groups": True,
            "can_read_all_group_messages": not self.group_privacy,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    async def _get_updates(self, record: RecordedRequest) -> list[JsonDict]:
        """Long polling: confirm by offset, then wait up to ``timeout`` s for updates."""
        params = record.params
        if self.webhook_url:
            raise TelegramError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; use "
                "deleteWebhook to delete the webhook first",
            )
        allowed = params.get("allowed_updates")
        if allowed is not None:
            self._allowed_updates = frozenset(allowed) if allowed else None
        offset = params.get("offset")
        if offset is not None:
            self._confirm(int(offset))
        limit = min(max(int(params.get("limit", 100)), 1), 100)
        timeout = max(float(params.get("timeout", 0)), 0.0)

        # A newer getUpdates terminates an older waiting one, as in Telegram.
        self._poll_generation += 1
        generation = self._poll_generation
        self._wake_pollers()

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            batch = self._take_batch(limit)
            remaining = deadline - loop.time()
            if batch or remaining <= 0 or self._closing:
                break
            event = self._updates_changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), remaining)
            if generation != self._poll_generation:
                raise TelegramError(
                    409,
                    "Conflict: terminated by other getUpdates request; make sure that only one "
                    "bot instance is running",
                )
        for entry in batch:
            entry.delivered = True
        return [copy.deepcopy(entry.update) for entry in batch]

    def _confirm(self, offset: int) -> None:
        if offset < 0:
            keep = -offset
            self._queue = self._queue[-keep:] if keep else []
            return
        self._queue = [
            entry
            for entry in self._queue
            if entry.update_id >= offset or (entry.redelivery and not entry.delivered)
        ]
        self.confirmed_offset = max(self.confirmed_offset, offset)

    def _take_batch(self, limit: int) -> list[_QueuedUpdate]:
        allowed = self._allowed_updates
        if allowed is None:
            allowed = frozenset(self._update_types()) - _NOT_DELIVERED_BY_DEFAULT
        kept: list[_QueuedUpdate] = []
        for entry in self._queue:
            if entry.kind in allowed:
                kept.append(entry)
            else:
                self.dropped_updates.append(entry.update)
        self._queue = kept
        return kept[:limit]

    def _update_types(self) -> list[str]:
        update = self.spec.types["Update"]
        return [name for name in update.fields if name != "update_id"]

    def _delete_webhook(self, record: RecordedRequest) -> bool:
        self.webhook_url = ""
        if record.params.get("drop_pending_updates"):
            self._queue.clear()
        return True

    def _set_webhook(self, record: RecordedRequest) -> bool:
        self.webhook_url = str(record.params["url"])
        if record.params.get("drop_pending_updates"):
            self._queue.clear()
        return True

    def _get_webhook_info(self, record: RecordedRequest) -> JsonDict:
        return {
            "url": self.webhook_url,
            "has_custom_certificate": False,
            "pending_update_count": len(self._queue),
        }

    @staticmethod
    def _commands_key(params: Mapping[str, Any]) -> tuple[str, str]:
        scope = params.get("scope") or {"type": "default"}
        return json.dumps(scope, sort_keys=True), str(params.get("language_code") or "")

    def _set_my_commands(self, record: RecordedRequest) -> bool:
        commands = record.params["commands"]
        if len(commands) > COMMANDS_LIMIT:
            raise bad_request("too many commands", violation="limit")
        for command in commands:
            if not _COMMAND_NAME_RE.match(str(command["command"])):
                raise bad_request("BOT_COMMAND_INVALID", violation="limit")
            if not 1 <= len(str(command["description"])) <= 256:
                raise bad_request("BOT_COMMAND_DESCRIPTION_INVALID", violation="limit")
        self.commands[self._commands_key(record.params)] = copy.deepcopy(commands)
        return True

    def _delete_my_commands(self, record: RecordedRequest) -> bool:
        self.commands.pop(self._commands_key(record.params), None)
        return True

    def _get_my_commands(self, record: RecordedRequest) -> list[JsonDict]:
        return copy.deepcopy(self.commands.get(self._commands_key(record.params), []))

    def _send_message(self, record: RecordedRequest) -> JsonDict:
        params = record.params
        state = self._target_chat(params["chat_id"])
        text, entities = self._format(
            str(params["text"]),
            params.get("parse_mode"),
            params.get("entities"),
            limit=TEXT_LIMIT,
            what="text",
        )
        options = self._send_options(state, params)
        content: JsonDict = {"text": text, "raw_text": params["text"]}
        if entities:
            content["entities"] = entities
        preview = _link_preview_options(params)
        if preview is not None:
            content["link_preview_options"] = preview
        return self._store_bot_message(state, content, options)

    def _caption_content(self, params: Mapping[str, Any]) -> JsonDict:
        if params.get("caption") is None:
            return {}
        caption, entities = self._format(
            str(params["caption"]),
            params.get("parse_mode"),
            params.get("caption_entities"),
            limit=CAPTION_LIMIT,
            what="caption",
        )
        content: JsonDict = {"raw_caption": params["caption"]}
        if caption:
            content["caption"] = caption
        if entities:
            content["caption_entities"] = entities
        return content

    def _send_media(self, record: RecordedRequest) -> JsonDict:
        params = record.params
        kind = _MEDIA_METHODS[record.method.lower()]
        state = self._target_chat(params["chat_id"])
        content = self._caption_content(params)
        options = self._send_options(state, params)
        stored = self._resolve_input_file(kind, params[kind], record)
        content[kind] = self.media_object(kind, stored, params)
        return self._store_bot_message(state, content, options)

    def _send_location(self, record: RecordedRequest) -> JsonDict:
        params = record.params
        state = self._target_chat(params["chat_id"])
        location = {"latitude": params["latitude"], "longitude": params["longitude"]}
        return self._store_bot_message(
            state, {"location": location}, self._send_options(state, params)
        )

    def _send_contact(self, record: RecordedRequest) -> JsonDict:
        params = record.params
        state = self._target_chat(params["chat_id"])
        contact = {
            key: params[key]
            for key in ("phone_number", "first_name", "last_name", "vcard")
            if params.get(key) is not None
        }
        return self._store_bot_message(
            state, {"contact": contact}, self._send_options(state, params)
        )

    def _send_dice(self, record: RecordedRequest) -> JsonDict:
        params = record.params
        state = self._target_chat(params["chat_id"])
        dice = {"emoji": params.get("emoji", "🎲"), "value": 1}
        return self._store_bot_message(state, {"dice": dice}, self._send_options(state, params))

    def _source_message(self, params: Mapping[str, Any], verb: str) -> JsonDict:
        source_chat = self.lookup_chat(params["from_chat_id"])
        if source_chat is None:
            raise bad_request("chat not found")
        source = source_chat.messages.get(int(params["message_id"]))
        if source is None:
            raise bad_request(f"message to {verb} not found")
        if not any(key in source for key in _CONTENT_KEYS):
            raise bad_request(f"message can't be {verb}ed")
        return source

    def _copy_message(self, record: RecordedRequest) -> JsonDict:
        params = record.params
        source = self._source_message(params, "copy")
        state = self._target_chat(params["chat_id"])
        content = {k: copy.deepcopy(source[k]) for k in _CONTENT_KEYS if k in source}
        if params.get("caption") is not None:
            for key in ("caption", "caption_entities", "raw_caption"):
                content.pop(key, None)
            content.update(self._caption_content(params))
        message = self._store_bot_message(state, content, self._send_options(state, params))
        return {"message_id": message["message_id"]}

    def _forward_message(self, record: RecordedRequest) -> JsonDict:
        params = record.params
        source = self._source_message(params, "forward")
        if source.get("has_protected_content"):
            raise bad_request("message can't be forwarded")
        state = self._target_chat(params["chat_id"])
        content = {k: copy.deepcopy(source[k]) for k in _CONTENT_KEYS if k in source}
        content["forward_origin"] = {
            "type": "user",
            "sender_user": dict(source["from"]),
            "date": source["date"],
        }
        return self._store_bot_message(state, content, self._send_options(state, params))

    def _edit_message_text(self, record: RecordedRequest) -> JsonDict:
        params = record.params
        if params.get("text") is None:
            raise bad_request("text is required", violation="spec")
        state, message = self._editable_message(params)
        if "text" not in message:
            raise bad_request("there is no text in the message to edit")
        text, entities = self._format(
            str(params["text"]),
            params.get("parse_mode"),
            params.get("entities"),
            limit=TEXT_LIMIT,
            what="text",
        )
        changes: JsonDict = {"text": text, "entities": entities or None}
        preview = _link_preview_options(params)
        if preview is not None:
            changes["link_preview_options"] = preview
        result = self._apply_edit(state, message, changes, params)
        message["raw_text"] = params["text"]
        message["parse_mode"] = params.get("parse_mode")
        return result

    def _edit_message_caption(self, record: RecordedRequest) -> JsonDict:
        params = record.params
        state, message = self._editable_message(params)
        if not any(kind in message for kind in _CAPTIONED_KINDS):
            raise bad_request("there is no caption in the message to edit")
        content = self._caption_content(params)
        changes: JsonDict = {
            "caption": content.get("caption"),
            "caption_entities": content.get("caption_entities"),
        }
        result = self._apply_edit(state, message, changes, params)
        message["raw_caption"] = params.get("caption")
        return result

    def _edit_message_reply_markup(self, record: RecordedRequest) -> JsonDict:
        state, message = self._editable_message(record.params)
        return self._apply_edit(state, message, {}, record.params)

    def _deletable_chat(self, chat_id: Any) -> ChatState:
        state = self.lookup_chat(chat_id)
        if state is None:
            raise bad_request("chat not found")
        if not state.is_private:
            self._check_can_post(state)
        return state

    def _delete_one(self, state: ChatState, message_id: int) -> bool:
        message = state.messages.get(message_id)
        if message is None:
            return False
        if (
            not state.is_private
            and message.get("from", {}).get("id") != self.bot_id
            and state.bot_status not in ("administrator", "creator")
        ):
            raise bad_request("message can't be deleted")
        del state.messages[message_id]
        state.deleted.append(message)
        self.deleted.append(message)
        return True

    def _delete_message(self, record: RecordedRequest) -> bool:
        state = self._deletable_chat(record.params["chat_id"])
        if not self._delete_one(state, int(record.params["message_id"])):
            raise bad_request("message to delete not found")
        return True

    def _delete_messages(self, record: RecordedRequest) -> bool:
        """Delete up to 100 messages; ids that are not found are skipped, as documented."""
        ids = record.params["message_ids"]
        if not 1 <= len(ids) <= DELETE_MESSAGES_LIMIT:
            raise bad_request("too many message identifiers specified", violation="limit")
        state = self._deletable_chat(record.params["chat_id"])
        for message_id in ids:
            try:
                self._delete_one(state, int(message_id))
            except TelegramError:
                continue  # messages that can't be deleted are skipped too
        return True

    def _answer_callback_query(self, record: RecordedRequest) -> bool:
        params = record.params
        query_id = str(params["callback_query_id"])
        if query_id not in self.callback_queries or query_id in self.callback_answers:
            raise bad_request(
                "query is too old and response timeout expired or query ID is invalid"
            )
        if len(str(params.get("text") or "")) > CALLBACK_ANSWER_TEXT_LIMIT:
            raise bad_request("MESSAGE_TOO_LONG", violation="limit")
        self.callback_answers[query_id] = copy.deepcopy(params)
        return True

    def _leave_chat(self, record: RecordedRequest) -> bool:
        state = self.lookup_chat(record.params["chat_id"])
        if state is None:
            raise bad_request("chat not found")
        if state.is_private:
            raise bad_request("chat member status can't be changed in private chats")
        self._check_can_post(state)
        self.change_bot_status(state, self.bot_user, "left")
        state.left_by_bot = True
        return True

    def _send_chat_action(self, record: RecordedRequest) -> bool:
        self._target_chat(record.params["chat_id"])
        if record.params["action"] not in _CHAT_ACTIONS:
            raise bad_request("wrong parameter action in request", violation="spec")
        return True

    def _get_chat(self, record: RecordedRequest) -> JsonDict:
        state = self.lookup_chat(record.params["chat_id"])
        if state is None:
            raise bad_request("chat not found")
        if not state.is_private and not state.bot_is_member:
            self._check_can_post(state)
        return {
            **state.chat,
            "accent_color_id": 0,
            "max_reaction_count": 11,
            "accepted_gift_types": {
                "unlimited_gifts": False,
                "limited_gifts": False,
                "unique_gifts": False,
                "premium_subscription": False,
                "gifts_from_channels": False,
            },
        }

    def _member_status(self, state: ChatState, user_id: int) -> tuple[JsonDict, str]:
        if user_id == self.bot_id:
            return self.bot_user, state.bot_status
        sim = self._users.get(user_id)
        if sim is None:
            raise bad_request("user not found")
        if state.is_private:
            return sim.user, "member" if user_id == state.id else "left"
        if user_id in state.admins:
            return sim.user, "administrator"
        return sim.user, "member" if user_id in state.members else "left"

    def _get_chat_member(self, record: RecordedRequest) -> JsonDict:
        state = self.lookup_chat(record.params["chat_id"])
        if state is None:
            raise bad_request("chat not found")
        user, status = self._member_status(state, int(record.params["user_id"]))
        return self._member_object(user, status)

    def _get_chat_administrators(self, record: RecordedRequest) -> list[JsonDict]:
        state = self._deletable_chat(record.params["chat_id"])
        admins = [self._member_object(self._users[i].user, "administrator") for i in state.admins]
        if state.bot_status == "administrator":
            admins.append(self._member_object(self.bot_user, "administrator"))
        return admins

    def _get_chat_member_count(self, record: RecordedRequest) -> int:
        state = self._deletable_chat(record.params["chat_id"])
        if state.is_private:
            return 2
        return len(state.members | state.admins) + (1 if state.bot_is_member else 0)

    def _get_file(self, record: RecordedRequest) -> JsonDict:
        stored = self.files.get(str(record.params["file_id"]))
        if stored is None:
            raise bad_request("invalid file_id")
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": len(stored.data),
            "file_path": stored.file_path,
        }


def _reply_copy(message: Mapping[str, Any]) -> JsonDict:
    """The ``reply_to_message`` object: Telegram does not nest replies further."""
    copied = wire(message)
    copied.pop("reply_to_message", None)
    return copied


def _link_preview_options(params: Mapping[str, Any]) -> JsonDict | None:
    """``link_preview_options``, or its legacy spelling ``disable_web_page_preview``."""
    if params.get("link_preview_options") is not None:
        return dict(copy.deepcopy(params["link_preview_options"]))
    if params.get("disable_web_page_preview"):
        return {"is_disabled": True}
    return None


def _is_outgoing_message(method_lower: str) -> bool:
    if method_lower == "sendchataction":
        return False
    return method_lower.startswith(("send", "editmessage", "copymessage", "forwardmessage"))


def _reset_connection(request: web.Request) -> None:
    """Close the request's TCP connection with a reset (RST), not an orderly close: no HTTP
    answer, and the client sees "connection reset by peer"."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _json_response(body: JsonDict, status: int) -> web.Response:
    return web.json_response(body, status=status, dumps=_dumps)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def iter_buttons(markup: Mapping[str, Any] | None) -> Iterable[JsonDict]:
    """All buttons of an inline keyboard, row by row."""
    for row in (markup or {}).get("inline_keyboard", []):
        yield from row
