"""Finding entities (age, time, place, platform, vehicle, registration, relation) in a message.

Driven entirely by the training data's `regex:`, `lookup:` and `synonym:` sections and by the
values annotated in examples, as Rasa's RegexEntityExtractor and EntitySynonymMapper would be,
so adding a town or an app is a data change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from nlu.training_data import TrainingData
from nlu.types import Entity

_DIGITS = re.compile(r"\d{1,3}")


@dataclass
class EntityExtractor:
    regexes: dict[str, list[str]]
    lookups: dict[str, list[str]]
    synonyms: dict[str, str]

    def __post_init__(self) -> None:
        self._compiled: list[tuple[str, re.Pattern[str]]] = []
        for name, patterns in sorted(self.regexes.items()):
            for pattern in patterns:
                # Case-sensitive, as written: "M62 is" must not read as a number plate.
                self._compiled.append((name, re.compile(pattern)))
        for name, values in sorted(self.lookups.items()):
            alternatives = sorted({v.strip() for v in values if v.strip()}, key=len, reverse=True)
            if alternatives:
                body = "|".join(re.escape(v) for v in alternatives)
                self._compiled.append((name, re.compile(rf"(?<!\w)(?:{body})(?!\w)", re.I)))

    @classmethod
    def from_training_data(cls, data: TrainingData) -> EntityExtractor:
        lookups = {k: list(v) for k, v in data.lookups.items()}
        for example in data.examples:
            for ent in example.entities:
                surface = example.text[ent.start : ent.end]
                # Numbers are found by regex; annotated numbers would over-match as lookups.
                if not surface.isdigit():
                    lookups.setdefault(ent.entity, []).append(surface)
        return cls(dict(data.regexes), lookups, dict(data.synonyms))

    def extract(self, text: str) -> tuple[Entity, ...]:
        found: list[Entity] = []
        for name, pattern in self._compiled:
            for match in pattern.finditer(text):
                if match.end() > match.start():
                    found.append(self._entity(name, match))
        return _without_overlaps(found)

    def _entity(self, name: str, match: re.Match[str]) -> Entity:
        surface = match.group(0)
        value = self.synonyms.get(surface.casefold(), surface)
        if name == "age":
            digits = _DIGITS.search(surface)
            value = digits.group(0) if digits else value
        return Entity(name, value, match.start(), match.end())

    def to_json(self) -> dict[str, Any]:
        return {"regexes": self.regexes, "lookups": self.lookups, "synonyms": self.synonyms}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> EntityExtractor:
        return cls(dict(raw["regexes"]), dict(raw["lookups"]), dict(raw["synonyms"]))


def _without_overlaps(found: list[Entity]) -> tuple[Entity, ...]:
    """Keep the longest span where spans overlap (a registration beats a stray word)."""
    kept: list[Entity] = []
    for ent in sorted(found, key=lambda e: (-(e.end - e.start), e.start)):
        if all(ent.end <= k.start or ent.start >= k.end for k in kept):
            kept.append(ent)
    return tuple(sorted(kept, key=lambda e: e.start))
