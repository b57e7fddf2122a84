"""A reporter's conversation in progress: what they have answered and where they are.

Kept sealed under the bot's draft key between messages so a restart loses nothing; erased on
quick exit. `to_bytes`/`from_bytes` are the only (de)serialisation, versioned for migrations.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any

# Places in a conversation that are not questions of a flow.
AUDIENCE = "@audience"
SUMMARY = "@summary"
CHANGE = "@change"
DONE = "@done"

FORMAT_VERSION = 1
# Telegram lets a bot delete messages younger than 48 hours; keep the newest ids only.
MAX_TRACKED_MESSAGES = 500


@dataclass
class Answer:
    choice: str | None = None
    text: str | None = None
    skipped: bool = False
    prefilled: bool = False  # taken from something the reporter typed earlier


@dataclass
class Draft:
    audience: str | None = None
    step: str = AUDIENCE
    answers: dict[str, Answer] = field(default_factory=dict)
    trail: list[str] = field(default_factory=list)
    editing: bool = False
    opening: list[str] = field(default_factory=list)
    edits: list[str] = field(default_factory=list)
    noted: list[tuple[str, str]] = field(default_factory=list)  # entities found in free text
    case_ref: str | None = None
    alerted: list[str] = field(default_factory=list)
    turn: int = 0
    message_ids: list[int] = field(default_factory=list)
    # The last update whose turn was saved, and the last whose reply went out: when they
    # differ, a crash came in between, and the reply is made good (ReportingService).
    saved_update: int | None = None
    answered_update: int | None = None

    def restart(self) -> None:
        """Fresh answers; the case reference, alerts and chat trace stay (they are real)."""
        self.audience = None
        self.step = AUDIENCE
        self.answers = {}
        self.trail = []
        self.editing = False
        self.opening = []
        self.edits = []
        self.noted = []

    def note_entities(self, entities: Iterable[tuple[str, str]]) -> None:
        for pair in entities:
            if pair not in self.noted:
                self.noted.append(pair)

    def track(self, message_ids: list[int]) -> None:
        self.message_ids.extend(message_ids)
        del self.message_ids[:-MAX_TRACKED_MESSAGES]

    def to_bytes(self) -> bytes:
        # Field by field rather than `dataclasses.asdict`, which deep-copies every element of
        # every list (up to 500 message ids) on each turn.
        data: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        data["answers"] = {step: vars(answer) for step, answer in self.answers.items()}
        return json.dumps({"v": FORMAT_VERSION, **data}, ensure_ascii=False).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Draft:
        data: dict[str, Any] = json.loads(raw)
        data.pop("v", None)
        answers = {k: Answer(**v) for k, v in data.pop("answers", {}).items()}
        noted = [(str(e), str(v)) for e, v in data.pop("noted", [])]
        return cls(answers=answers, noted=noted, **data)
