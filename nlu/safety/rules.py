"""Safety rules: the reviewed phrase and pattern list that flags danger in any message.

The rules live in a data file (``rules.yml`` next to this module) so that a safeguarding lead
can review them without reading code. This module loads and validates that file, compiles
each rule into a few regular expressions, and assesses messages.

Speed: each phrase list becomes one prefix-tree regex, each pattern its own regex, and each
regex carries a small set of words of which at least one must be in a message for it to match
(see ``gate.py``); a regex whose words are all absent is skipped. A 4096-character message is
assessed in well under a millisecond.

Loading is strict: anything odd in the file (unknown key, unknown level, duplicate id, empty
phrase, a pattern that does not compile or matches empty text, an unknown ``{word list}``)
raises :class:`bot.errors.ConfigError` naming the file and line.

Assessing is total: :meth:`SafetyRules.assess` never raises for any string. If something
unexpected goes wrong inside, it fails safe by returning a HIGH verdict with the reason
``error:safety_rules`` so a human looks at the message.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from bot.errors import ConfigError
from nlu.safety.gate import phrase_words, required_words
from nlu.safety.text import Normaliser, phrase_regex, trie_branches
from nlu.types import Level, Urgency

log = logging.getLogger(__name__)

DEFAULT_RULES_PATH = Path(__file__).with_name("rules.yml")

#: The score reported for each level the rules can give.
SCORES: dict[Level, float] = {
    Level.IMMEDIATE: 0.97,
    Level.HIGH: 0.85,
    Level.ROUTINE: 0.5,
    Level.NONE: 0.0,
}
#: Levels a rule may have (a rule at level "none" would be pointless).
RULE_LEVELS: tuple[Level, ...] = (Level.IMMEDIATE, Level.HIGH, Level.ROUTINE)
ERROR_REASON = "error:safety_rules"

_ID = re.compile(r"[a-z][a-z0-9_]*")
_PLACEHOLDER = re.compile(r"(?<!\\)\{([a-z][a-z0-9_]*)\}")
# A search pattern runs on " padded text ": "^" can never match and the end of the message
# is " $" (a space, then the end).
_ANCHOR = re.compile(r"^\^|(?<![ \\])\$")


@dataclass(frozen=True)
class Rule:
    """One reviewed rule, as written in the rules file."""

    id: str
    level: Level
    description: str
    phrases: tuple[str, ...]
    patterns: tuple[str, ...]
    line: int

    @property
    def reason(self) -> str:
        return f"rule:{self.id}"


@dataclass(frozen=True)
class RuleMatch:
    """A rule that matched one message.

    ``level`` is the level reported for this message: the rule's own level, except that an
    IMMEDIATE rule is reported at the file's ``past.reported_as`` level when the message only
    talks about the past (see ``past:`` in rules.yml).
    """

    rule_id: str
    level: Level
    rule_level: Level

    @property
    def reason(self) -> str:
        return f"rule:{self.rule_id}"


@dataclass(frozen=True)
class _Branch:
    """One regex run on " padded text ", skipped unless the text has one of ``gate``."""

    regex: re.Pattern[str]
    gate: frozenset[str] | None  # None: always run

    def hits(self, padded: str, words: frozenset[str]) -> bool:
        if self.gate is not None and self.gate.isdisjoint(words):
            return False
        return self.regex.search(padded) is not None


@dataclass(frozen=True)
class _Compiled:
    rule: Rule
    branches: tuple[_Branch, ...]
    whole: tuple[re.Pattern[str], ...]  # fullmatch against the stripped text

    def hits(self, padded: str, words: frozenset[str]) -> bool:
        if any(branch.hits(padded, words) for branch in self.branches):
            return True
        if self.whole:
            core = padded.strip()
            return any(w.fullmatch(core) is not None for w in self.whole)
        return False


@dataclass(frozen=True)
class _Past:
    reported_as: Level
    markers: tuple[_Branch, ...]
    unless: tuple[_Branch, ...]

    def only_past(self, prepared: Sequence[tuple[str, frozenset[str]]]) -> bool:
        """True if the text has a past marker and nothing saying it is happening now."""
        saw_past = False
        for padded, words in prepared:
            if any(b.hits(padded, words) for b in self.unless):
                return False
            if any(b.hits(padded, words) for b in self.markers):
                saw_past = True
        return saw_past


class SafetyRules:
    """Compiled safety rules. Build with :meth:`load`; use with :meth:`assess`."""

    def __init__(
        self,
        *,
        source: str,
        version: int,
        normaliser: Normaliser,
        rules: tuple[_Compiled, ...],
        not_danger: tuple[_Branch, ...],
        past: _Past | None,
    ) -> None:
        self.source = source
        self.version = version
        self._normaliser = normaliser
        self._rules = rules
        self._not_danger = not_danger
        self._past = past

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def load(cls, path: Path | None = None) -> SafetyRules:
        """Load and validate a rules file (default: the packaged ``rules.yml``)."""
        path = DEFAULT_RULES_PATH if path is None else Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read safety rules: {exc}") from None
        return cls.loads(text, source=str(path))

    @classmethod
    def loads(cls, text: str, source: str = "<rules>") -> SafetyRules:
        """Like :meth:`load`, from the text of a rules file; ``source`` names it in errors."""
        return _Builder(source).build(text)

    def subset(self, rule_ids: Iterable[str]) -> SafetyRules:
        """The same rules file restricted to some rules (for tests and diagnostics)."""
        wanted = set(rule_ids)
        unknown = wanted - {c.rule.id for c in self._rules}
        if unknown:
            raise KeyError(f"no such rule: {', '.join(sorted(unknown))}")
        return SafetyRules(
            source=self.source,
            version=self.version,
            normaliser=self._normaliser,
            rules=tuple(c for c in self._rules if c.rule.id in wanted),
            not_danger=self._not_danger,
            past=self._past,
        )

    # -- inspection -------------------------------------------------------------------------

    @property
    def rules(self) -> tuple[Rule, ...]:
        return tuple(c.rule for c in self._rules)

    def normalise(self, text: str) -> str:
        """The canonical form of ``text`` that phrases are matched against."""
        return self._normaliser(text)

    # -- assessment -------------------------------------------------------------------------

    def matches(self, text: str) -> tuple[RuleMatch, ...]:
        """Every rule that matches ``text``, most urgent first, then by id."""
        if not isinstance(text, str):
            text = str(text)
        prepared = self._prepare(text)
        past_only = self._past is not None and self._past.only_past(prepared)
        found: list[RuleMatch] = []
        for compiled in self._rules:
            if not any(compiled.hits(padded, words) for padded, words in prepared):
                continue
            rule_level = compiled.rule.level
            level = rule_level
            if past_only and self._past is not None and rule_level is Level.IMMEDIATE:
                level = self._past.reported_as
            found.append(RuleMatch(compiled.rule.id, level, rule_level))
        found.sort(key=lambda m: (-m.level.rank, m.rule_id))
        return tuple(found)

    def assess(self, text: str) -> Urgency:
        """How urgent ``text`` is according to the rules. Never raises."""
        try:
            found = self.matches(text)
        except Exception:  # defensive: fail safe, never fail open
            log.exception("safety rules failed on a message; escalating it to a human")
            return Urgency(Level.HIGH, SCORES[Level.HIGH], (ERROR_REASON,))
        if not found:
            return Urgency.nothing()
        level = found[0].level
        return Urgency(level, SCORES[level], tuple(m.reason for m in found))

    def _prepare(self, text: str) -> list[tuple[str, frozenset[str]]]:
        """Each reading as (" padded text ", its words), with not_danger spans taken out."""
        out: list[tuple[str, frozenset[str]]] = []
        for reading in self._normaliser.readings(text):
            padded = f" {reading} "
            words = frozenset(reading.split())
            removed = False
            for branch in self._not_danger:
                if branch.gate is None or not branch.gate.isdisjoint(words):
                    padded, count = branch.regex.subn(" .", padded)
                    removed = removed or count > 0
            out.append((padded, frozenset(padded.split()) if removed else words))
        return out


# ---------------------------------------------------------------------------------------------
# Loading and validation

_TOP_KEYS = ("version", "normalise", "emoji", "words", "past", "rules", "not_danger")
_RULE_KEYS = ("id", "level", "description", "phrases", "patterns")
_PATTERN_KEYS = ("match", "why", "whole_message")
_PAST_KEYS = ("reported_as", "markers", "unless")
_NOT_DANGER_KEYS = ("phrases", "patterns")


@dataclass(frozen=True)
class _Phrase:
    text: str
    line: int


@dataclass(frozen=True)
class _PatternSpec:
    match: str
    whole_message: bool
    line: int


class _Builder:
    """Walks the YAML node tree (which carries line numbers) and compiles the rules."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.normaliser = Normaliser({}, {})
        self.words: dict[str, list[_Phrase]] = {}
        self._word_cache: dict[str, str] = {}
        self._expanding: list[str] = []

    # -- errors -----------------------------------------------------------------------------

    def fail(self, node: yaml.Node | None, message: str) -> ConfigError:
        if node is not None:
            return ConfigError(f"{self.source}: line {node.start_mark.line + 1}: {message}")
        return ConfigError(f"{self.source}: {message}")

    # -- YAML shape helpers -----------------------------------------------------------------

    def mapping(
        self,
        node: yaml.Node,
        what: str,
        allowed: Sequence[str] | None = None,
        required: Sequence[str] = (),
    ) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, f"{what} must be a mapping of 'key: value' lines")
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or not key_node.value.strip():
                raise self.fail(key_node, f"{what}: every key must be a plain word")
            key = key_node.value.strip()
            if key in out:
                raise self.fail(key_node, f"{what}: duplicate key {key!r}")
            if allowed is not None and key not in allowed:
                raise self.fail(
                    key_node,
                    f"{what}: unknown key {key!r} (allowed: {', '.join(allowed)})",
                )
            out[key] = (key_node, value_node)
        for key in required:
            if key not in out:
                raise self.fail(node, f"{what}: missing required key {key!r}")
        return out

    def sequence(self, node: yaml.Node, what: str) -> list[yaml.Node]:
        if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
            return []
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, f"{what} must be a list ('- item' lines)")
        return list(node.value)

    def string(self, node: yaml.Node, what: str, allow_empty: bool = False) -> str:
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, f"{what} must be a single piece of text")
        value = "" if node.tag.endswith(":null") else str(node.value)
        if not allow_empty and not value.strip():
            raise self.fail(node, f"{what} is empty")
        return value

    def boolean(self, node: yaml.Node, what: str) -> bool:
        value = self.string(node, what).strip().lower()
        if value in ("true", "yes", "on"):
            return True
        if value in ("false", "no", "off"):
            return False
        raise self.fail(node, f"{what} must be true or false, not {value!r}")

    def level(self, node: yaml.Node, what: str, allowed: Sequence[Level]) -> Level:
        value = self.string(node, what).strip().lower()
        for level in allowed:
            if level.value == value:
                return level
        names = ", ".join(level.value for level in allowed)
        raise self.fail(node, f"{what}: unknown level {value!r} (allowed: {names})")

    def phrases(self, node: yaml.Node, what: str) -> list[_Phrase]:
        out: list[_Phrase] = []
        for item in self.sequence(node, what):
            out.append(_Phrase(self.string(item, f"{what}: phrase"), item.start_mark.line + 1))
        return out

    def pattern_specs(self, node: yaml.Node, what: str) -> list[_PatternSpec]:
        out: list[_PatternSpec] = []
        for item in self.sequence(node, what):
            fields = self.mapping(item, f"{what}: pattern", _PATTERN_KEYS, ("match", "why"))
            match_node = fields["match"][1]
            match = self.string(match_node, f"{what}: pattern 'match'")
            self.string(fields["why"][1], f"{what}: pattern 'why'")
            whole = False
            if "whole_message" in fields:
                whole = self.boolean(fields["whole_message"][1], f"{what}: 'whole_message'")
            if "'" in match:
                raise self.fail(
                    match_node,
                    f"{what}: write patterns without apostrophes (messages are matched with "
                    "them removed: 'he is' not he's, 'mans' not man's)",
                )
            if not whole and _ANCHOR.search(match):
                raise self.fail(
                    match_node,
                    f"{what}: use 'whole_message: true' instead of ^, and write ' $' for the end "
                    "of the message",
                )
            out.append(_PatternSpec(match, whole, match_node.start_mark.line + 1))
        return out

    # -- the whole file ---------------------------------------------------------------------

    def build(self, text: str) -> SafetyRules:
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            where = f"line {mark.line + 1}: " if mark is not None else ""
            problem = exc.problem or exc.context or "invalid YAML"
            raise ConfigError(f"{self.source}: {where}not valid YAML: {problem}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{self.source}: not valid YAML: {exc}") from None
        if root is None:
            raise ConfigError(f"{self.source}: the rules file is empty")
        top = self.mapping(root, "the rules file", _TOP_KEYS, ("version", "rules"))

        version_node = top["version"][1]
        version_text = self.string(version_node, "version").strip()
        if version_text != "1":
            raise self.fail(version_node, f"unsupported version {version_text!r} (expected 1)")

        mapping: dict[str, str] = {}
        if "normalise" in top:
            plain = Normaliser({}, {})
            for key, (key_node, value_node) in self.mapping(
                top["normalise"][1], "normalise"
            ).items():
                mapping[key] = self.string(value_node, f"normalise: {key!r}")
                if not plain(key):
                    raise self.fail(key_node, f"normalise: {key!r} has no letters or digits")
        emoji: dict[str, str] = {}
        if "emoji" in top:
            for key, (_, value_node) in self.mapping(top["emoji"][1], "emoji").items():
                emoji[key] = self.string(value_node, f"emoji: {key!r}")
        self.normaliser = Normaliser(mapping, emoji)

        if "words" in top:
            for name, (key_node, value_node) in self.mapping(top["words"][1], "words").items():
                if not _ID.fullmatch(name):
                    raise self.fail(key_node, f"words: list name {name!r} must be lower_case")
                entries = self.phrases(value_node, f"words: {name}")
                if not entries:
                    raise self.fail(value_node, f"words: {name} is an empty list")
                self.words[name] = entries
            for name, entries in self.words.items():  # catch bad entries early, with lines
                self._word_regex(name, entries[0].line)

        rules = self._rules(top["rules"][1])
        not_danger = self._not_danger(top["not_danger"][1]) if "not_danger" in top else ()
        past = self._past_section(top["past"][1]) if "past" in top else None
        return SafetyRules(
            source=self.source,
            version=1,
            normaliser=self.normaliser,
            rules=rules,
            not_danger=not_danger,
            past=past,
        )

    def _rules(self, node: yaml.Node) -> tuple[_Compiled, ...]:
        items = self.sequence(node, "rules")
        if not items:
            raise self.fail(node, "rules: there must be at least one rule")
        seen: dict[str, int] = {}
        compiled: list[_Compiled] = []
        for item in items:
            fields = self.mapping(item, "rule", _RULE_KEYS, ("id", "level", "description"))
            id_node = fields["id"][1]
            rule_id = self.string(id_node, "rule id").strip()
            if not _ID.fullmatch(rule_id):
                raise self.fail(id_node, f"rule id {rule_id!r} must be lower_case_with_underscores")
            if rule_id in seen:
                raise self.fail(
                    id_node, f"duplicate rule id {rule_id!r} (first used on line {seen[rule_id]})"
                )
            seen[rule_id] = id_node.start_mark.line + 1
            what = f"rule {rule_id}"
            level = self.level(fields["level"][1], f"{what}: level", RULE_LEVELS)
            description = self.string(fields["description"][1], f"{what}: description").strip()
            phrases = (
                self.phrases(fields["phrases"][1], f"{what}: phrases")
                if "phrases" in fields
                else []
            )
            patterns = (
                self.pattern_specs(fields["patterns"][1], f"{what}: patterns")
                if "patterns" in fields
                else []
            )
            if not phrases and not patterns:
                raise self.fail(item, f"{what}: needs at least one phrase or pattern")
            rule = Rule(
                id=rule_id,
                level=level,
                description=description,
                phrases=tuple(p.text for p in phrases),
                patterns=tuple(p.match for p in patterns),
                line=seen[rule_id],
            )
            branches = self._branches(phrases, [p for p in patterns if not p.whole_message], what)
            whole = tuple(
                self._compile(self._pattern(p), p.line, what) for p in patterns if p.whole_message
            )
            compiled.append(_Compiled(rule, branches, whole))
        return tuple(compiled)

    def _not_danger(self, node: yaml.Node) -> tuple[_Branch, ...]:
        fields = self.mapping(node, "not_danger", _NOT_DANGER_KEYS)
        phrases = (
            self.phrases(fields["phrases"][1], "not_danger: phrases") if "phrases" in fields else []
        )
        patterns = (
            self.pattern_specs(fields["patterns"][1], "not_danger: patterns")
            if "patterns" in fields
            else []
        )
        for spec in patterns:
            if spec.whole_message:
                raise ConfigError(
                    f"{self.source}: line {spec.line}: not_danger: 'whole_message' is not allowed"
                )
        return self._branches(phrases, patterns, "not_danger")

    def _past_section(self, node: yaml.Node) -> _Past:
        fields = self.mapping(node, "past", _PAST_KEYS, ("reported_as", "markers"))
        # Only "high": a message about past danger must still alert the on-call team.
        reported_as = self.level(fields["reported_as"][1], "past: reported_as", (Level.HIGH,))
        markers = self.phrases(fields["markers"][1], "past: markers")
        if not markers:
            raise self.fail(fields["markers"][1], "past: markers is an empty list")
        unless = self.phrases(fields["unless"][1], "past: unless") if "unless" in fields else []
        return _Past(
            reported_as,
            self._branches(markers, [], "past: markers"),
            self._branches(unless, [], "past: unless"),
        )

    # -- compiling --------------------------------------------------------------------------

    def _alternatives(
        self, phrases: Sequence[_Phrase], patterns: Sequence[_PatternSpec], what: str
    ) -> list[tuple[str, int, frozenset[str] | None]]:
        """(regex, line, gate) for: all plain phrases as one prefix tree, each phrase with a
        {word list}, each pattern. The gate is only known here for the prefix tree."""
        literal: list[str] = []
        out: list[tuple[str, int, frozenset[str] | None]] = []
        for phrase in phrases:
            if _PLACEHOLDER.search(phrase.text):
                out.append((self._template(phrase, what), phrase.line, None))
            else:
                literal.append(self._normal_phrase(phrase, what))
        for spec in patterns:
            regex = self._pattern(spec)
            # Compiled on its own first: errors name its line, and a stray ")" cannot slip
            # through by closing the group it is wrapped in below.
            self._compile(regex, spec.line, what)
            out.append((f"(?:{regex})", spec.line, None))
        if literal:
            gate = frozenset(phrase_words(p) for p in literal)
            out.insert(0, ("|".join(trie_branches(literal)), phrases[0].line, gate))
        return out

    def _branches(
        self, phrases: Sequence[_Phrase], patterns: Sequence[_PatternSpec], what: str
    ) -> tuple[_Branch, ...]:
        """Compiled, gated regexes for phrases and patterns, run on " padded text "."""
        branches: list[_Branch] = []
        for regex, line, gate in self._alternatives(phrases, patterns, what):
            compiled = self._compile(f" (?:{regex})(?= )", line, what)
            branches.append(_Branch(compiled, gate if gate is not None else required_words(regex)))
        return tuple(branches)

    def _normal_phrase(self, phrase: _Phrase, what: str) -> str:
        normal = self.normaliser(phrase.text)
        if not normal:
            raise ConfigError(
                f"{self.source}: line {phrase.line}: {what}: phrase {phrase.text!r} is empty "
                "once punctuation is removed"
            )
        return normal

    def _template(self, phrase: _Phrase, what: str) -> str:
        """Regex for a phrase containing {word list} placeholders."""
        pieces = _PLACEHOLDER.split(phrase.text)
        out: list[str] = []
        for position, piece in enumerate(pieces):
            if position % 2 == 1:
                before, after = pieces[position - 1], pieces[position + 1]
                if (before and not before[-1].isspace()) or (after and not after[0].isspace()):
                    raise ConfigError(
                        f"{self.source}: line {phrase.line}: {what}: {{{piece}}} must stand "
                        "as a whole word, with spaces around it"
                    )
                out.append(self._word_regex(piece, phrase.line))
            else:
                normal = self.normaliser(piece)
                if normal:
                    out.append(phrase_regex(normal))
        if not out:
            raise ConfigError(f"{self.source}: line {phrase.line}: {what}: phrase is empty")
        return " ".join(out)

    def _pattern(self, spec: _PatternSpec) -> str:
        """A pattern with its {word lists} expanded."""
        body = spec.match.strip()

        def expand(match: re.Match[str]) -> str:
            return self._word_regex(match.group(1), spec.line)

        return _PLACEHOLDER.sub(expand, body)

    def _word_regex(self, name: str, line: int) -> str:
        cached = self._word_cache.get(name)
        if cached is not None:
            return cached
        if name not in self.words:
            known = ", ".join(sorted(self.words)) or "none defined"
            raise ConfigError(
                f"{self.source}: line {line}: unknown word list {{{name}}} (known: {known})"
            )
        if name in self._expanding:
            chain = " -> ".join([*self._expanding, name])
            raise ConfigError(f"{self.source}: line {line}: word lists refer in a circle: {chain}")
        self._expanding.append(name)
        try:
            literal: list[str] = []
            branches: list[str] = []
            for entry in self.words[name]:
                if _PLACEHOLDER.search(entry.text):
                    branches.append(self._template(entry, f"words: {name}"))
                else:
                    literal.append(self._normal_phrase(entry, f"words: {name}"))
            regex = "(?:" + "|".join(trie_branches(literal) + branches) + ")"
        finally:
            self._expanding.pop()
        self._word_cache[name] = regex
        return regex

    def _compile(self, regex: str, line: int, what: str) -> re.Pattern[str]:
        try:
            compiled = re.compile(regex)
        except (re.error, RecursionError, OverflowError) as exc:
            raise ConfigError(
                f"{self.source}: line {line}: {what}: pattern does not compile: {exc}"
            ) from None
        if compiled.search("") is not None or compiled.search("  ") is not None:
            raise ConfigError(f"{self.source}: line {line}: {what}: pattern matches empty text")
        return compiled
