"""Rows the store hands out. Sealed blobs stay sealed until a staff key opens them."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class CaseRow:
    COLUMNS: ClassVar[str] = (
        "ref, reporter, audience, level, status, created_at, submitted_at, reply_handle IS NOT NULL"
    )
    ref: str
    reporter: str
    audience: str | None
    level: str
    status: str
    created_at: str
    submitted_at: str | None
    can_reply: bool

    @classmethod
    def from_row(cls, row: sqlite3.Row | tuple[object, ...]) -> CaseRow:
        r = tuple(row)
        return cls(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7]))  # type: ignore[arg-type]


@dataclass(frozen=True)
class RecordRow:
    id: int
    case_ref: str
    kind: str
    created_at: str
    sealed: bytes


@dataclass(frozen=True)
class EscalationRow:
    COLUMNS: ClassVar[str] = (
        "id, case_ref, level, reasons, created_at, acknowledged_at, acknowledged_by"
    )
    id: int
    case_ref: str
    level: str
    reasons: tuple[str, ...]
    created_at: str
    acknowledged_at: str | None
    acknowledged_by: str | None

    @classmethod
    def from_row(cls, row: sqlite3.Row | tuple[object, ...]) -> EscalationRow:
        r = tuple(row)
        reasons = tuple(json.loads(str(r[3])))
        return cls(r[0], r[1], r[2], reasons, r[4], r[5], r[6])  # type: ignore[arg-type]


@dataclass(frozen=True)
class OutboxItem:
    id: int
    escalation_id: int
    attempts: int
    message_id: int | None
    case_ref: str
    level: str
