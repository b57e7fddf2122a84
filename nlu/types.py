"""Shared result types for everything that judges how urgent a message is.

The safety rules (``nlu.safety``) produce an :class:`Urgency`; a trained classifier added later
produces one too, and the two are combined with :meth:`Urgency.merge`, which can only ever keep
or raise the level, never lower it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol


class Level(enum.StrEnum):
    """How urgently a message needs a human.

    The string values are what is stored and shown; compare levels with :attr:`rank`
    (or :func:`max_level`), never with ``<`` on the strings.
    """

    IMMEDIATE = "immediate"  # a child is in danger now or within hours: 999 + on-call alert
    HIGH = "high"  # serious harm disclosed or likely: on-call alert
    ROUTINE = "routine"  # a concern for the normal queue
    NONE = "none"  # nothing of concern found

    @property
    def rank(self) -> int:
        """0 for NONE up to 3 for IMMEDIATE."""
        return _RANK[self]

    @property
    def escalate(self) -> bool:
        """True exactly for IMMEDIATE and HIGH: the on-call team is alerted."""
        return self.rank >= _RANK[Level.HIGH]


_RANK: dict[Level, int] = {Level.NONE: 0, Level.ROUTINE: 1, Level.HIGH: 2, Level.IMMEDIATE: 3}


def max_level(first: Level, *others: Level) -> Level:
    """The most urgent of the given levels."""
    best = first
    for level in others:
        if level.rank > best.rank:
            best = level
    return best


@dataclass(frozen=True)
class Urgency:
    """The verdict on one message.

    ``reasons`` are short machine-readable tags shown to staff, e.g. ``"rule:danger_now"``.
    """

    level: Level
    score: float
    reasons: tuple[str, ...] = ()

    @property
    def escalate(self) -> bool:
        """True exactly for IMMEDIATE and HIGH."""
        return self.level.escalate

    def to_json(self) -> dict[str, object]:
        return {"level": self.level.value, "score": self.score, "reasons": list(self.reasons)}

    def merge(self, other: Urgency) -> Urgency:
        """Combine two verdicts: the higher level wins, reasons are kept from both.

        Merging can never lower the level of either side, so a classifier merged with the
        rules can only add urgency.
        """
        level = max_level(self.level, other.level)
        reasons = tuple(dict.fromkeys(self.reasons + other.reasons))
        return Urgency(level=level, score=max(self.score, other.score), reasons=reasons)

    @classmethod
    def nothing(cls) -> Urgency:
        """The verdict for a message with nothing of concern in it."""
        return cls(level=Level.NONE, score=0.0, reasons=())


# --------------------------------------------------------------------------- model output


@dataclass(frozen=True)
class IntentScore:
    name: str
    confidence: float

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "confidence": round(self.confidence, 4)}


@dataclass(frozen=True)
class Entity:
    """A span of the message, in Rasa's shape: `start`/`end` are character offsets."""

    entity: str
    value: str
    start: int
    end: int

    def to_json(self) -> dict[str, object]:
        return {"entity": self.entity, "value": self.value, "start": self.start, "end": self.end}


@dataclass(frozen=True)
class ModelOutput:
    """What an intent model (embedded or Rasa) says about one message, before safety rules."""

    intent: IntentScore
    ranking: tuple[IntentScore, ...]
    entities: tuple[Entity, ...]
    engine: str  # "embedded" or "rasa", for the logs and the reasons shown to staff
    # A dedicated urgency classifier's probability that this is danger now (the embedded
    # model has one; Rasa does not, and then only the urgent intents' probabilities count).
    urgent_probability: float | None = None


class IntentModel(Protocol):
    """An engine that names the intent of a message and finds entities in it."""

    async def predict(self, text: str) -> ModelOutput: ...


@dataclass(frozen=True)
class ParseResult:
    """The full verdict: the model's output merged with the safety rules (`safeguard nlu parse`)."""

    text: str
    model: ModelOutput
    urgency: Urgency

    def to_json(self) -> dict[str, object]:
        return {
            "text": self.text,
            "intent": self.model.intent.to_json(),
            "intent_ranking": [i.to_json() for i in self.model.ranking],
            "entities": [e.to_json() for e in self.model.entities],
            "urgency": self.urgency.to_json(),
            "escalate": self.urgency.escalate,
        }
