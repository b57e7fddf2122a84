"""Simulated humans: a user with their private chat, and group chats.

Tests speak through these objects the way people use Telegram: type a message, press a
button, send a photo, then wait for what the bot answers.  All helpers run in the event loop
of the emulator; "sending" queues an update that the bot picks up on its next getUpdates.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .html import trim_text, utf16_len
from .server import BOT_COMMAND_RE, TEXT_LIMIT, ChatState, JsonDict, iter_buttons, wire

if TYPE_CHECKING:
    from .server import BotApiEmulator

__all__ = ["SimGroup", "SimUser", "message_text"]

# Tiny but recognisable payloads: tests check that the bot passes bytes through, not pixels.
FAKE_JPEG = b"\xff\xd8\xff\xe0fake-jpeg-for-tests\xff\xd9"
FAKE_MP4 = b"\x00\x00\x00\x18ftypmp42fake-mp4-for-tests"
FAKE_OGG = b"OggSfake-voice-for-tests"
FAKE_PDF = b"%PDF-1.4\nfake-pdf-for-tests\n%%EOF"
FAKE_WEBP = b"RIFF\x00\x00\x00\x00WEBPfake-sticker"


def message_text(message: JsonDict) -> str:
    """The visible text of a message: its text, or its caption for media."""
    return str(message.get("text") or message.get("caption") or "")


def _preview(message: JsonDict, width: int = 60) -> str:
    text = message_text(message).replace("\n", "⏎")
    if not text:
        kind = next(
            (k for k in message if k not in ("message_id", "from", "chat", "date")), "message"
        )
        text = f"<{kind}>"
    return text if len(text) <= width else text[: width - 1] + "…"


class _SimChat:
    """What a human sees in one chat: its history, the bot's messages and its buttons."""

    def __init__(self, emulator: BotApiEmulator, state: ChatState) -> None:
        self.emulator = emulator
        self.state = state

    @property
    def chat_id(self) -> int:
        return self.state.id

    @property
    def chat(self) -> JsonDict:
        """The Telegram Chat object."""
        return dict(self.state.chat)

    def history(self) -> list[JsonDict]:
        """Messages in the chat that are not deleted, oldest first (copies)."""
        return [copy.deepcopy(m) for m in self.state.messages.values()]

    def bot_messages(self) -> list[JsonDict]:
        """The bot's messages that are not deleted, oldest first (copies)."""
        return [m for m in self.history() if m.get("from", {}).get("id") == self.emulator.bot_id]

    def last_bot_message(self) -> JsonDict | None:
        """The newest bot message still in the chat, if any."""
        messages = self.bot_messages()
        return messages[-1] if messages else None

    def message(self, message_id: int) -> JsonDict | None:
        """A message by id, or None if it does not exist or was deleted."""
        message = self.state.messages.get(message_id)
        return copy.deepcopy(message) if message is not None else None

    @property
    def deleted(self) -> list[JsonDict]:
        """Messages of this chat the bot deleted, in deletion order."""
        return copy.deepcopy(self.state.deleted)

    def describe(self, last: int = 10) -> str:
        """The tail of the chat as text lines, for assertion messages."""
        lines = []
        for message in list(self.state.messages.values())[-last:]:
            sender = message.get("from", {})
            who = "bot" if sender.get("id") == self.emulator.bot_id else sender.get("id", "?")
            buttons = [b.get("text", "") for b in iter_buttons(message.get("reply_markup"))]
            suffix = f"  buttons={buttons}" if buttons else ""
            lines.append(f"  #{message['message_id']} {who}: {_preview(message)!r}{suffix}")
        return "\n".join(lines) or "  (empty chat)"

    async def wait_for_bot_message(
        self,
        contains: str | None = None,
        count: int = 1,
        timeout: float = 5.0,
        *,
        after: int | None = None,
    ) -> JsonDict:
        """Wait for ``count`` new bot messages (containing ``contains``); return the newest.

        "New" means sent after the latest simulated action in this chat (a message from a
        user or a button press), or after message id ``after`` if given.  Matching looks at
        the text, or the caption of media.
        """
        since = self.state.action_message_id if after is None else after
        bot_id = self.emulator.bot_id

        def matching() -> list[JsonDict] | None:
            found = [
                m
                for m in self.state.messages.values()
                if m["message_id"] > since
                and m.get("from", {}).get("id") == bot_id
                and (contains is None or contains in message_text(m))
            ]
            return found if len(found) >= count else None

        what = f"{count} bot message(s)" + (f" containing {contains!r}" if contains else "")
        found = await self._wait(matching, timeout, what)
        return copy.deepcopy(found[-1])

    async def wait_for_edit(
        self,
        message_id: int,
        contains: str | None = None,
        timeout: float = 5.0,
    ) -> JsonDict:
        """Wait until the bot edits message ``message_id`` after the latest simulated action."""
        baseline = self.state.action_seq

        def edited() -> JsonDict | None:
            message = self.state.messages.get(message_id)
            if message is None or self.state.edit_seq.get(message_id, 0) <= baseline:
                return None
            if contains is not None and contains not in message_text(message):
                return None
            return message

        found = await self._wait(edited, timeout, f"an edit of message {message_id}")
        return copy.deepcopy(found)

    async def _wait(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        try:
            return await self.emulator.wait_for(predicate, timeout, f"{what} in {self}")
        except AssertionError as error:
            raise AssertionError(f"{error}\nchat {self.chat_id} now:\n{self.describe()}") from None

    def _keyboard_message(self, message: JsonDict | int | None) -> JsonDict:
        if message is None:
            for candidate in reversed(self.state.messages.values()):
                if candidate.get("from", {}).get("id") == self.emulator.bot_id and list(
                    iter_buttons(candidate.get("reply_markup"))
                ):
                    return candidate
            raise AssertionError(
                f"no bot message with an inline keyboard in chat {self.chat_id}:\n{self.describe()}"
            )
        message_id = message if isinstance(message, int) else int(message["message_id"])
        found = self.state.messages.get(message_id)
        if found is None:
            raise AssertionError(
                f"message {message_id} is not in chat {self.chat_id} (deleted?):\n{self.describe()}"
            )
        return found

    def _find_button(self, message: JsonDict, label: str) -> JsonDict:
        buttons = list(iter_buttons(message.get("reply_markup")))
        button = next((b for b in buttons if b.get("text") == label), None)
        if button is None:
            button = next((b for b in buttons if b.get("callback_data") == label), None)
        if button is None:
            listing = ", ".join(
                f"{b.get('text')!r} -> {b.get('callback_data', '(no callback_data)')!r}"
                for b in buttons
            )
            raise AssertionError(
                f"no button {label!r} on message #{message['message_id']} "
                f"({_preview(message)!r}); available buttons: {listing or 'none'}"
            )
        if "callback_data" not in button:
            kinds = sorted(set(button) - {"text", "style", "icon_custom_emoji_id"})
            raise AssertionError(
                f"button {button.get('text')!r} is a {'/'.join(kinds)} button: pressing it "
                "sends nothing to the bot"
            )
        return button


class SimUser(_SimChat):
    """A Telegram user and their private chat with the bot (``chat_id == user id``)."""

    def __init__(self, emulator: BotApiEmulator, state: ChatState, user: JsonDict) -> None:
        super().__init__(emulator, state)
        self.user = user

    def __repr__(self) -> str:
        return f"SimUser({self.id}, {self.user['first_name']!r})"

    __str__ = __repr__

    @property
    def id(self) -> int:
        return int(self.user["id"])

    @property
    def blocked(self) -> bool:
        """True while the user has blocked the bot."""
        return self.state.bot_status == "kicked"

    @property
    def reply_keyboard(self) -> list[list[str]] | None:
        """Button texts of the custom reply keyboard the bot currently shows, if any."""
        keyboard = self.state.reply_keyboard
        if not keyboard or "keyboard" not in keyboard:
            return None
        return [
            [b if isinstance(b, str) else str(b.get("text", "")) for b in row]
            for row in keyboard["keyboard"]
        ]

    # -- sending -----------------------------------------------------------------------------

    async def send_text(
        self, text: str, entities: list[JsonDict] | None = None, *, reply_to: int | None = None
    ) -> JsonDict:
        """Type ``text`` in the private chat; ``/cmd`` gets a bot_command entity."""
        return await self._send(_text_content(text, entities), reply_to)

    async def send_photo(
        self, caption: str | None = None, *, data: bytes = FAKE_JPEG, reply_to: int | None = None
    ) -> JsonDict:
        """Send a photo (Telegram delivers several sizes; the last is the largest)."""
        stored = self.emulator.register_file("photo", data, mime_type="image/jpeg")
        content = {"photo": self.emulator.media_object("photo", stored)}
        return await self._send(_with_caption(content, caption), reply_to)

    async def send_video(
        self,
        caption: str | None = None,
        *,
        data: bytes = FAKE_MP4,
        duration: int = 5,
        reply_to: int | None = None,
    ) -> JsonDict:
        """Send a video."""
        stored = self.emulator.register_file(
            "video", data, mime_type="video/mp4", file_name="video.mp4"
        )
        content = {"video": self.emulator.media_object("video", stored, {"duration": duration})}
        return await self._send(_with_caption(content, caption), reply_to)

    async def send_document(
        self,
        file_name: str = "document.pdf",
        caption: str | None = None,
        *,
        data: bytes = FAKE_PDF,
        mime_type: str = "application/pdf",
        reply_to: int | None = None,
    ) -> JsonDict:
        """Send a file as a document."""
        stored = self.emulator.register_file(
            "document", data, mime_type=mime_type, file_name=file_name
        )
        content = {"document": self.emulator.media_object("document", stored)}
        return await self._send(_with_caption(content, caption), reply_to)

    async def send_voice(
        self, duration: int = 3, *, data: bytes = FAKE_OGG, reply_to: int | None = None
    ) -> JsonDict:
        """Send a voice note."""
        stored = self.emulator.register_file("voice", data, mime_type="audio/ogg")
        content = {"voice": self.emulator.media_object("voice", stored, {"duration": duration})}
        return await self._send(content, reply_to)

    async def send_sticker(self, emoji: str = "👍", *, reply_to: int | None = None) -> JsonDict:
        """Send a sticker."""
        stored = self.emulator.register_file("sticker", FAKE_WEBP, mime_type="image/webp")
        content = {"sticker": self.emulator.media_object("sticker", stored, {"emoji": emoji})}
        return await self._send(content, reply_to)

    async def send_location(
        self, latitude: float = 51.5074, longitude: float = -0.1278
    ) -> JsonDict:
        """Share a location."""
        return await self._send({"location": {"latitude": latitude, "longitude": longitude}})

    async def send_contact(
        self,
        phone_number: str = "+447700900123",
        first_name: str | None = None,
        *,
        user_id: int | None = None,
    ) -> JsonDict:
        """Share a contact (by default their own, like the "share my phone" button)."""
        contact: JsonDict = {
            "phone_number": phone_number,
            "first_name": first_name or self.user["first_name"],
        }
        own = first_name is None and user_id is None
        if own or user_id is not None:
            contact["user_id"] = self.id if own else user_id
        return await self._send({"contact": contact})

    async def edit_text(self, message_id: int, new_text: str) -> JsonDict:
        """Edit one of the user's own text messages (an ``edited_message`` update)."""
        message = self.state.messages.get(message_id)
        if message is None or message.get("from", {}).get("id") != self.id:
            raise AssertionError(f"message {message_id} is not a message of {self} in the chat")
        if "text" not in message:
            raise AssertionError(f"message {message_id} has no text to edit")
        message.pop("entities", None)
        message.update(_text_content(new_text, None))
        message["edit_date"] = max(message["date"] + 1, message.get("edit_date", 0) + 1)
        self.state.action_seq = self.emulator.next_seq()
        self.emulator.enqueue_update("edited_message", wire(message))
        return wire(message)

    async def press(self, button: str, message: JsonDict | int | None = None) -> JsonDict:
        """Press an inline button by its text (or callback_data) and return the callback query.

        Without ``message`` the newest bot message that has an inline keyboard is used.
        """
        target = self._keyboard_message(message)
        found = self._find_button(target, button)
        return self.emulator.issue_callback_query(
            self.state, self.user, target["message_id"], str(found["callback_data"])
        )

    async def press_data(self, message_id: int, raw_data: str) -> JsonDict:
        """Send a callback query with arbitrary data, as a modified client could."""
        return self.emulator.issue_callback_query(self.state, self.user, message_id, raw_data)

    async def wait_for_answer(self, query: JsonDict, timeout: float = 5.0) -> JsonDict:
        """Wait for the bot's answerCallbackQuery to ``query``; return its parameters."""
        query_id = query["id"]
        answer = await self._wait(
            lambda: self.emulator.callback_answers.get(query_id),
            timeout,
            f"answerCallbackQuery({query_id})",
        )
        return dict(answer)

    async def block(self) -> None:
        """Block the bot: a ``my_chat_member`` update; sends then fail with 403."""
        if not self.blocked:
            self.emulator.change_bot_status(self.state, self.user, "kicked")

    async def unblock(self) -> None:
        """Unblock the bot again."""
        if self.blocked:
            self.emulator.change_bot_status(self.state, self.user, "member")

    async def _send(self, content: JsonDict, reply_to: int | None = None) -> JsonDict:
        # Writing to the bot implies having started it (and unblocked it).
        if self.blocked:
            await self.unblock()
        self.state.started = True
        return self.emulator.store_user_message(self.state, self.user, content, reply_to=reply_to)


class SimGroup(_SimChat):
    """A group or supergroup; members talk in it through :meth:`send_text`."""

    def __repr__(self) -> str:
        return f"SimGroup({self.chat_id}, {self.state.chat.get('title')!r})"

    __str__ = __repr__

    @property
    def title(self) -> str:
        return str(self.state.chat.get("title", ""))

    @property
    def bot_status(self) -> str:
        """The bot's membership: "left", "member", "administrator" or "kicked"."""
        return self.state.bot_status

    @property
    def bot_left(self) -> bool:
        """True after the bot itself called leaveChat on this group."""
        return self.state.left_by_bot

    def set_admin(self, user: SimUser, admin: bool = True) -> None:
        """Make ``user`` an administrator (affects getChatMember/getChatAdministrators)."""
        self.state.members.add(user.id)
        if admin:
            self.state.admins.add(user.id)
        else:
            self.state.admins.discard(user.id)

    async def join(self, user: SimUser) -> JsonDict:
        """``user`` joins the group (a ``new_chat_members`` service message)."""
        self.state.members.add(user.id)
        return self.emulator.store_user_message(
            self.state, user.user, {"new_chat_members": [dict(user.user)]}
        )

    async def send_text(
        self,
        user: SimUser,
        text: str,
        entities: list[JsonDict] | None = None,
        *,
        reply_to: int | None = None,
    ) -> JsonDict:
        """``user`` writes in the group; with privacy mode the bot may not receive it."""
        self.state.members.add(user.id)
        return self.emulator.store_user_message(
            self.state, user.user, _text_content(text, entities), reply_to=reply_to
        )

    async def press(
        self, user: SimUser, button: str, message: JsonDict | int | None = None
    ) -> JsonDict:
        """``user`` presses an inline button on a bot message in the group."""
        target = self._keyboard_message(message)
        found = self._find_button(target, button)
        return self.emulator.issue_callback_query(
            self.state, user.user, target["message_id"], str(found["callback_data"])
        )


def _text_content(text: str, entities: list[JsonDict] | None) -> JsonDict:
    """A text message body as Telegram stores it: trimmed, with a bot_command entity.

    Clients cannot send empty or over-long texts (they split them), so a test trying to is
    told so instead of producing an update Telegram would never deliver.
    """
    trimmed = trim_text(text, [dict(e) for e in entities or []])
    text, found = trimmed.text, trimmed.entities
    if not text:
        raise AssertionError("Telegram clients cannot send an empty (or whitespace) message")
    if utf16_len(text) > TEXT_LIMIT:
        raise AssertionError(
            f"a text of {utf16_len(text)} UTF-16 units is over Telegram's {TEXT_LIMIT}: "
            "clients split it into several messages"
        )
    content: JsonDict = {"text": text}
    command = BOT_COMMAND_RE.match(text)
    if command and not any(e.get("type") == "bot_command" and e.get("offset") == 0 for e in found):
        found.insert(0, {"type": "bot_command", "offset": 0, "length": utf16_len(command.group(0))})
    if found:
        content["entities"] = found
    return content


def _with_caption(content: JsonDict, caption: str | None) -> JsonDict:
    if caption:
        content["caption"] = caption
    return content
