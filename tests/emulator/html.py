"""Telegram's HTML parse mode, re-implemented closely enough to reject what Telegram rejects.

A bot that builds HTML from user input (reports, names, free text) breaks in production the
first time someone types ``<`` or ``&``.  The emulator therefore parses every
``parse_mode=HTML`` text with the same rules as Telegram's server (tdlib's ``parse_html``),
answers with the same ``can't parse entities: ...`` descriptions, and produces the plain text
and ``MessageEntity`` list that Telegram would store, with offsets in UTF-16 code units.

One deliberate difference: Telegram silently keeps a bare ``&`` that does not start a known
entity; with ``strict_ampersand=True`` (the default) the emulator rejects it, because it
almost always means user text was interpolated without ``html.escape``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ALLOWED_TAGS",
    "HtmlParseError",
    "ParsedText",
    "parse_html",
    "trim_text",
    "utf16_len",
]

#: Tags Telegram accepts in HTML parse mode (lower case; tag names are case-insensitive).
ALLOWED_TAGS = frozenset(
    {
        "a",
        "b",
        "strong",
        "i",
        "em",
        "u",
        "ins",
        "s",
        "strike",
        "del",
        "span",
        "tg-spoiler",
        "code",
        "pre",
        "blockquote",
        "tg-emoji",
        "tg-time",
    }
)

_SIMPLE_ENTITY_TYPES = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "span": "spoiler",
    "tg-spoiler": "spoiler",
    "code": "code",
}

_NAMED_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}

#: Characters Telegram trims from both ends of a message text.
_TRIMMED_WHITESPACE = " \t\n\r\v\f"


class HtmlParseError(ValueError):
    """The text is not valid Telegram HTML; ``str(error)`` is Telegram's description tail."""


@dataclass
class ParsedText:
    """Result of parsing: the text a user would see and the formatting entities on it."""

    text: str
    entities: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _OpenTag:
    name: str
    byte_offset: int
    utf16_start: int
    attrs: dict[str, str] = field(default_factory=dict)
    language: str | None = None  # set on <pre> by a nested <code class="language-...">


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units, the unit Telegram uses for limits and entity offsets."""
    return len(text.encode("utf-16-le")) // 2


def _byte_offset(text: str, index: int) -> int:
    """UTF-8 byte offset of ``text[index]``; Telegram reports parse errors in bytes."""
    return len(text[:index].encode("utf-8"))


def _decode_entity(text: str, pos: int) -> tuple[str, int] | None:
    """Decode the HTML entity starting at ``text[pos] == '&'`` like tdlib does.

    Returns the decoded character and the index just after the entity, or None if ``&`` does
    not start an entity Telegram knows.  As in tdlib, the trailing ``;`` is optional.
    """
    end = pos + 1
    n = len(text)
    if end < n and text[end] == "#":
        end += 1
        code = 0
        if end < n and text[end] == "x":
            end += 1
            while end < n and text[end] in "0123456789abcdefABCDEF" and code < 0x110000:
                code = code * 16 + int(text[end], 16)
                end += 1
        else:
            while end < n and text[end].isascii() and text[end].isdigit() and code < 0x110000:
                code = code * 10 + int(text[end])
                end += 1
        if code == 0 or code >= 0x10FFFF or 0xD800 <= code <= 0xDFFF or end - pos >= 10:
            return None
        char = chr(code)
    else:
        while end < n and text[end].isascii() and text[end].isalpha():
            end += 1
        decoded = _NAMED_ENTITIES.get(text[pos + 1 : end])
        if decoded is None:
            return None
        char = decoded
    if end < n and text[end] == ";":
        end += 1
    return char, end


def _is_space(char: str) -> bool:
    return char in " \t\r\n\f\v"


def parse_html(source: str, *, strict_ampersand: bool = True) -> ParsedText:
    """Parse Telegram HTML into plain text and entities, raising like Telegram on bad input.

    The error texts mirror tdlib's (``Unsupported start tag "p" at byte offset 0`` and so on)
    so assertions and log scanners written against the emulator also match production.
    """
    out: list[str] = []
    utf16_pos = 0
    stack: list[_OpenTag] = []
    entities: list[dict[str, Any]] = []
    n = len(source)
    i = 0

    def emit(chunk: str) -> None:
        nonlocal utf16_pos
        out.append(chunk)
        utf16_pos += utf16_len(chunk)

    while i < n:
        char = source[i]
        if char == "&":
            decoded = _decode_entity(source, i)
            if decoded is not None:
                emit(decoded[0])
                i = decoded[1]
                continue
            if strict_ampersand:
                raise HtmlParseError(
                    f'Unescaped "&" at byte offset {_byte_offset(source, i)}: write it as '
                    '"&amp;" (the emulator is stricter than Telegram here on purpose)'
                )
        if char != "<":
            emit(char)
            i += 1
            continue

        begin = i
        begin_bytes = _byte_offset(source, begin)
        i += 1
        if i >= n or source[i] != "/":
            i, tag = _parse_start_tag(source, i, begin_bytes)
            tag.utf16_start = utf16_pos
            stack.append(tag)
            continue

        # An end tag.
        if not stack:
            raise HtmlParseError(f"Unexpected end tag at byte offset {begin_bytes}")
        i += 1
        name_begin = i
        while i < n and not _is_space(source[i]) and source[i] != ">":
            i += 1
        end_name = source[name_begin:i].lower()
        while i < n and _is_space(source[i]):
            i += 1
        if i >= n or source[i] != ">":
            raise HtmlParseError(f"Unclosed end tag at byte offset {begin_bytes}")
        i += 1
        tag = stack.pop()
        if end_name and end_name != tag.name:
            raise HtmlParseError(
                f'Unmatched end tag at byte offset {begin_bytes}, expected "</{tag.name}>", '
                f'found "</{end_name}>"'
            )
        _close_tag(tag, utf16_pos, stack, entities, out)

    if stack:
        raise HtmlParseError(f'Can\'t find end tag corresponding to start tag "{stack[-1].name}"')
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return ParsedText("".join(out), entities)


def _parse_start_tag(source: str, i: int, begin_bytes: int) -> tuple[int, _OpenTag]:
    """Parse ``<name attr="v" ...>`` starting just after ``<``; return the index after ``>``."""
    n = len(source)
    name_begin = i
    while i < n and not _is_space(source[i]) and source[i] != ">":
        i += 1
    if i >= n:
        raise HtmlParseError(f"Unclosed start tag at byte offset {begin_bytes}")
    name = source[name_begin:i].lower()
    if name not in ALLOWED_TAGS:
        raise HtmlParseError(f'Unsupported start tag "{name}" at byte offset {begin_bytes}')
    tag = _OpenTag(name=name, byte_offset=begin_bytes, utf16_start=0)

    while True:
        while i < n and _is_space(source[i]):
            i += 1
        if i >= n:
            raise HtmlParseError(f"Unclosed start tag at byte offset {begin_bytes}")
        if source[i] == ">":
            i += 1
            break
        attr_begin = i
        while i < n and not _is_space(source[i]) and source[i] not in "=>":
            i += 1
        attr = source[attr_begin:i].lower()
        if not attr:
            raise HtmlParseError(
                f'Empty attribute name in the tag "{name}" at byte offset {begin_bytes}'
            )
        while i < n and _is_space(source[i]):
            i += 1
        if i >= n:
            raise HtmlParseError(f"Unclosed start tag at byte offset {begin_bytes}")
        if source[i] != "=":
            if name == "blockquote" and attr == "expandable":
                tag.attrs[attr] = ""
                continue
            raise HtmlParseError(
                f'Expected equal sign in declaration of an attribute of the tag "{name}" '
                f"at byte offset {begin_bytes}"
            )
        i += 1
        while i < n and _is_space(source[i]):
            i += 1
        if i >= n:
            raise HtmlParseError(f"Unclosed start tag at byte offset {begin_bytes}")
        if source[i] not in "\"'":
            # An unquoted value is an HTML "name token": letters, digits, '.', '-'.
            value_begin = i
            while i < n and source[i].isascii() and (source[i].isalnum() or source[i] in ".-"):
                i += 1
            value = source[value_begin:i].lower()
            if i >= n:
                raise HtmlParseError(f"Unclosed start tag at byte offset {begin_bytes}")
        else:
            quote = source[i]
            i += 1
            chunks: list[str] = []
            while i < n and source[i] != quote:
                if source[i] == "&":
                    decoded = _decode_entity(source, i)
                    if decoded is not None:
                        chunks.append(decoded[0])
                        i = decoded[1]
                        continue
                chunks.append(source[i])
                i += 1
            if i >= n:
                raise HtmlParseError(f"Unclosed start tag at byte offset {begin_bytes}")
            i += 1
            value = "".join(chunks)
        tag.attrs[attr] = value

    if name == "span" and tag.attrs.get("class") != "tg-spoiler":
        raise HtmlParseError(
            f'Tag "span" must have class "tg-spoiler" at byte offset {begin_bytes}'
        )
    return i, tag


def _close_tag(
    tag: _OpenTag,
    utf16_end: int,
    stack: list[_OpenTag],
    entities: list[dict[str, Any]],
    text_so_far: list[str],
) -> None:
    """Turn a closed tag into a MessageEntity (empty ranges produce none, as in Telegram)."""
    length = utf16_end - tag.utf16_start
    if length <= 0:
        return
    entity: dict[str, Any] = {"offset": tag.utf16_start, "length": length}
    name = tag.name
    if name in _SIMPLE_ENTITY_TYPES:
        if name == "code" and stack and stack[-1].name == "pre":
            # <pre><code class="language-x"> is one "pre" entity (with a language).
            language = tag.attrs.get("class", "")
            if language.startswith("language-"):
                stack[-1].language = language.removeprefix("language-")
            return
        entity["type"] = _SIMPLE_ENTITY_TYPES[name]
    elif name == "pre":
        entity["type"] = "pre"
        if tag.language:
            entity["language"] = tag.language
    elif name == "blockquote":
        entity["type"] = "expandable_blockquote" if "expandable" in tag.attrs else "blockquote"
    elif name == "a":
        url = tag.attrs.get("href", "")
        if not url:
            # Telegram uses the link text itself as the URL when href is empty.
            url = _utf16_slice("".join(text_so_far), tag.utf16_start, utf16_end)
        if url.startswith("tg://user?id="):
            user_id = url.removeprefix("tg://user?id=")
            if not user_id.isdigit():
                return
            entity["type"] = "text_mention"
            entity["user"] = {"id": int(user_id), "is_bot": False, "first_name": ""}
        else:
            entity["type"] = "text_link"
            entity["url"] = url
    elif name == "tg-emoji":
        emoji_id = tag.attrs.get("emoji-id")
        if not emoji_id:
            return
        entity["type"] = "custom_emoji"
        entity["custom_emoji_id"] = emoji_id
    elif name == "tg-time":
        unix = tag.attrs.get("unix", "")
        if not unix.isdigit():
            return
        entity["type"] = "date_time"
        entity["unix_time"] = int(unix)
        if tag.attrs.get("format"):
            entity["date_time_format"] = tag.attrs["format"]
    else:  # pragma: no cover - ALLOWED_TAGS and this function must stay in sync
        return
    entities.append(entity)


def _utf16_slice(text: str, start: int, end: int) -> str:
    encoded = text.encode("utf-16-le")
    return encoded[start * 2 : end * 2].decode("utf-16-le", errors="replace")


def trim_text(text: str, entities: list[dict[str, Any]]) -> ParsedText:
    """Strip leading/trailing whitespace like Telegram and shift entities to match.

    Telegram stores ``"\\nHello\\n"`` as ``"Hello"``; tests comparing texts must see the same.
    Entities that end up empty are dropped, the rest are clipped to the trimmed text.
    """
    stripped_left = text.lstrip(_TRIMMED_WHITESPACE)
    lead = len(text) - len(stripped_left)  # whitespace is BMP: chars == UTF-16 units
    trimmed = stripped_left.rstrip(_TRIMMED_WHITESPACE)
    total = utf16_len(trimmed)
    result: list[dict[str, Any]] = []
    for entity in entities:
        start = max(0, entity["offset"] - lead)
        end = min(total, entity["offset"] + entity["length"] - lead)
        if end > start:
            result.append({**entity, "offset": start, "length": end - start})
    return ParsedText(trimmed, result)
