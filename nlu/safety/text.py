"""Text normalisation and regex building for the safety rules.

Everything here is pure and total: no function raises on any ``str`` input.

A message is normalised into a canonical form before matching:

1. Unicode NFKC, accents and other combining marks removed, casefold ("ＨＥＬＰ" -> "help",
   "kíll" -> "kill", "z̷a̷l̷g̷o̷" -> "zalgo");
2. zero-width, bidi and other format characters removed; control characters become spaces;
3. every apostrophe look-alike becomes ``'``;
4. emoji listed in the rules file become words (🔪 -> "knife");
5. punctuation and symbols become spaces; apostrophes stay only inside words;
6. a letter repeated 3 or more times is shortened to 2 ("helpppp" -> "helpp"); when that
   happened, a second reading with such runs shortened to 1 letter ("help") is matched too;
7. text-speak and contractions are mapped word by word ("rn" -> "right now", "hes" -> "he is");
8. remaining apostrophes removed ("mum's" -> "mums"), whitespace collapsed to single spaces.

The rules' phrases go through the same steps, so a phrase written "he's outside" matches the
message "hes outside!!!".
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping

# Control characters (C0, DEL, C1, line/paragraph separators) become spaces.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029]")
# Format characters that change nothing visible: soft hyphen, zero-width space/joiners,
# bidi marks/embeddings/overrides/isolates, word joiner, BOM, variation selectors, tag
# characters, emoji skin-tone modifiers. Lone surrogates and private-use characters go too.
_INVISIBLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8\ud800-\udfff\ue000-\uf8ff"
    "\U0001f3fb-\U0001f3ff\U000e0000-\U000e007f\U000e0100-\U000e01ef]"
)
# (A regex, not str.translate: translate is slow on long non-ASCII text such as emoji.)
# Combining marks of the Latin-script blocks (accents, "zalgo" text). Marks of other scripts
# are kept: they are part of those scripts' letters.
_COMBINING = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")
_APOSTROPHES = re.compile("[\u2018\u2019\u201a\u201b\u02bc\u02bb\u2032\u00b4`\uff07]")
_PUNCTUATION = re.compile(r"[^\w\s']+")  # "_" is a word character; replaced separately
_LONE_APOSTROPHE = re.compile(r"'(?:(?<!\w')|(?!\w))")
_ANY_RUN = re.compile(r"(.)\1\1")  # cheap test before the letter-only substitution below
_LETTER_RUN = re.compile(r"([^\W\d_])\1{2,}")


def _basic(text: str) -> str:
    """Steps 1-3: Unicode form, case, invisible and control characters, apostrophes."""
    if not text.isascii():
        text = unicodedata.normalize("NFKD", text)
        text = unicodedata.normalize("NFC", _COMBINING.sub("", text))
    text = text.casefold()
    text = _CONTROL.sub(" ", text)
    text = _INVISIBLE.sub("", text)
    return _APOSTROPHES.sub("'", text)


def _strip_punctuation(text: str) -> str:
    """Step 5: symbols to spaces; apostrophes only inside words."""
    text = _PUNCTUATION.sub(" ", text)
    if "_" in text:
        text = text.replace("_", " ")
    if "'" in text:
        text = _LONE_APOSTROPHE.sub(" ", text)
    return text


class Normaliser:
    """Turns raw text into the canonical form the rules are matched against."""

    def __init__(self, mapping: Mapping[str, str], emoji: Mapping[str, str]) -> None:
        emoji_map: dict[str, str] = {}
        for symbol, words in emoji.items():
            key = _basic(symbol).strip()
            if key:
                emoji_map[key] = f" {words} "
        self._emoji_map = emoji_map
        self._emoji_re = (
            re.compile("|".join(re.escape(k) for k in sorted(emoji_map, key=len, reverse=True)))
            if emoji_map
            else None
        )
        word_map: dict[str, str] = {}
        for variant, canonical in mapping.items():
            key = self._words(variant)[0]
            if key and key not in word_map:
                word_map[key] = self._words(canonical)[0].replace("'", "")
        self._map = word_map
        # Matched on " padded text ": the leading space is a literal prefix the regex engine
        # can search for quickly, and the trie makes the alternatives cheap to reject.
        self._map_re = (
            re.compile(" (?:" + "|".join(trie_branches(word_map)) + ")(?= )") if word_map else None
        )

    def _words(self, text: str) -> list[str]:
        """Steps 1-6 (no mapping): one reading, or two when letters were stretched."""
        text = _strip_punctuation(self._emoji(_basic(text)))
        if _ANY_RUN.search(text) is None or _LETTER_RUN.search(text) is None:
            return [" ".join(text.split())]
        return [
            " ".join(_LETTER_RUN.sub(r"\1\1", text).split()),
            " ".join(_LETTER_RUN.sub(r"\1", text).split()),
        ]

    def readings(self, text: str) -> list[str]:
        """The canonical form(s) of ``text``: lower-case words separated by single spaces.

        Usually one; two when the text had a letter stretched ("helpppp" gives "helpp" and
        "help").
        """
        out: list[str] = []
        for reading in self._words(text):
            reading = self._apply_map(reading)
            if reading not in out:
                out.append(reading)
        return out

    def __call__(self, text: str) -> str:
        """The first (main) canonical form of ``text``."""
        return self.readings(text)[0]

    def _apply_map(self, text: str) -> str:
        if self._map_re is not None and text:
            word_map = self._map
            text = self._map_re.sub(lambda m: " " + word_map[m.group(0)[1:]], f" {text} ")
        # Contractions are expanded by now; other apostrophes go ("mum's" -> "mums").
        if "'" in text:
            text = text.replace("'", "")
        return " ".join(text.split())

    def _emoji(self, text: str) -> str:
        if self._emoji_re is None or text.isascii():
            return text
        emoji_map = self._emoji_map
        return self._emoji_re.sub(lambda m: emoji_map[m.group(0)], text)


# ---------------------------------------------------------------------------------------------
# Regex building

_Trie = dict[str, "_Trie"]
_END = ""  # key marking "a phrase ends here"; never a real character


def phrase_regex(phrase: str) -> str:
    """Regex for one normalised phrase (literal text, single spaces)."""
    return re.escape(phrase)


def trie_branches(phrases: Iterable[str]) -> list[str]:
    """Top-level alternatives of a prefix-tree regex matching any of ``phrases``.

    Sharing prefixes keeps the regex small, and because every alternative starts with a
    literal character the regex engine rejects non-matching alternatives cheaply. Longer
    phrases are tried first.
    """
    root: _Trie = {}
    for phrase in phrases:
        if not phrase:
            continue
        node = root
        for ch in phrase:
            node = node.setdefault(ch, {})
        node[_END] = {}
    return [re.escape(k) + _render(root[k]) for k in sorted(root)]


def _render(node: _Trie) -> str:
    parts = [re.escape(k) + _render(node[k]) for k in sorted(node) if k != _END]
    if not parts:
        return ""
    body = parts[0] if len(parts) == 1 else "(?:" + "|".join(parts) + ")"
    if _END in node:
        return "(?:" + body + ")?"
    return body
