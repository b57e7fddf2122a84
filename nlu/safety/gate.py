"""Cheap word checks that let most regexes be skipped for most messages.

For a regex that is matched as ``" (?:regex)(?= )"`` against normalised text (words separated
by single spaces), :func:`required_words` works out a set of words of which at least one must
be present as a whole word in any text the regex can match. A message whose words do not
include any of them cannot match, so the regex need not run.

The analysis is conservative: whenever it cannot prove such a set (unusual regex syntax, an
unbounded repeat, a Python version with a different parser) it returns ``None`` and the regex
simply always runs. A wrong answer here could hide a match, so when in doubt it gives up.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Sequence
from typing import Any

try:  # the regex parser of the standard library; private, hence the fallback
    _parser: Any = importlib.import_module("re._parser")
    _c: Any = importlib.import_module("re._constants")
except ImportError:  # pragma: no cover - other Python versions
    _parser = None
    _c = None

_MAX_STRINGS = 5000
_SPACE = 32

_COMMON = """
a about after again all am an and any are as at be because been before being but by can
cannot come could did do does doing done down for from get gets getting go going gone got
had has have having he her here him his how i if in into is it its just know like me more
my no not now of off on one only or other our out over said say says see she so some
someone something still take than that the their them then there these they this those to
too up us very was we were what when where which who why will with would you your
"""
#: Words too common to be a useful gate (a gate of only these would open for most messages).
COMMON_WORDS: frozenset[str] = frozenset(_COMMON.split())


def required_words(regex: str) -> frozenset[str] | None:
    """Words of which at least one appears in any padded text ``regex`` matches; or None."""
    if _parser is None:
        return None
    try:
        tree = _parser.parse(regex)
        if tree.state.flags & (re.IGNORECASE | re.VERBOSE):
            return None
        return _required(list(tree.data))
    except Exception:  # any surprise: no gate, the regex always runs
        return None


def phrase_words(phrase: str) -> str:
    """The best single gate word of a literal phrase (every word of it is required)."""
    return _best_word(phrase.split())


def _required(seq: list[Any]) -> frozenset[str] | None:
    if len(seq) == 1 and seq[0][0] is _c.SUBPATTERN:
        _group, add_flags, del_flags, body = seq[0][1]
        return None if add_flags or del_flags else _required(list(body))
    if len(seq) == 1 and seq[0][0] is _c.BRANCH:
        union: set[str] = set()
        for alternative in seq[0][1][1]:
            words = _required(list(alternative))
            if words is None:
                return None
            union |= words
        return frozenset(union)
    best: frozenset[str] | None = None
    for run in _runs(seq):
        strings = _language(run)
        if strings is None:
            continue
        picked: set[str] = set()
        for string in strings:
            if not string or string[0] == " ":
                picked.clear()
                break  # this run can match nothing, or start with a space: no sure word
            picked.add(_best_word(string.split()))
        if picked and (best is None or _cost(picked) < _cost(best)):
            best = frozenset(picked)
    return best


def _runs(seq: Sequence[Any]) -> list[list[Any]]:
    """Split a top-level sequence at its literal spaces: each run covers whole words."""
    runs: list[list[Any]] = [[]]
    for op, av in seq:
        if op is _c.LITERAL and av == _SPACE:
            runs.append([])
        else:
            runs[-1].append((op, av))
    return [run for run in runs if run]


def _language(seq: Iterable[Any]) -> set[str] | None:
    """Every string ``seq`` can match, if that is a small finite set; else None."""
    strings = {""}
    for op, av in seq:
        options = _options(op, av)
        if options is None:
            return None
        if options == {""}:
            continue
        strings = {s + o for s in strings for o in options}
        if len(strings) > _MAX_STRINGS:
            return None
    return strings


def _options(op: Any, av: Any) -> set[str] | None:
    if op is _c.LITERAL:
        return {chr(av)}
    if op in (_c.AT, _c.ASSERT, _c.ASSERT_NOT):
        return {""}  # zero-width: consumes nothing
    if op is _c.IN:
        chars: set[str] = set()
        for item_op, item_av in av:
            if item_op is _c.LITERAL:
                chars.add(chr(item_av))
            elif item_op is _c.RANGE and item_av[1] - item_av[0] < 40:
                chars.update(chr(x) for x in range(item_av[0], item_av[1] + 1))
            else:
                return None
        return chars
    if op is _c.BRANCH:
        union: set[str] = set()
        for alternative in av[1]:
            strings = _language(alternative)
            if strings is None:
                return None
            union |= strings
        return union
    if op is _c.SUBPATTERN:
        _group, add_flags, del_flags, body = av
        if add_flags or del_flags:
            return None
        return _language(body)
    if op in (_c.MAX_REPEAT, _c.MIN_REPEAT):
        low, high, body = av
        if high != 1 or low > 1:
            return None
        strings = _language(body)
        if strings is None:
            return None
        return strings | {""} if low == 0 else strings
    return None


def _best_word(words: Sequence[str]) -> str:
    """The rarest-looking word: not a common word if possible, then the longest."""
    return max(words, key=lambda w: (w not in COMMON_WORDS, len(w)))


def _cost(words: Iterable[str]) -> int:
    words = list(words)
    return 1000 * sum(w in COMMON_WORDS for w in words) + len(words)
