"""Rows the store hands out. Sealed blobs stay sealed until a staff key opens them."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class CaseRow:
    COLUMNS: ClassVar[str] = (
        "ref, reporter, audience, level, status, created_at, submitted_at, "
        "reply_handle IS NOT NULL, assigned_to, outcome, closed_at"
    )
    ref: str
    reporter: str
    audience: str | None
    level: str
    status: str
    created_at: str
    submitted_at: str | None
    can_reply: bool
    assigned_to: str | None = None
    outcome: str | None = None
    closed_at: str | None = None

    @classmethod
    def from_row(cls, row: sqlite3.Row | tuple[object, ...]) -> CaseRow:
        r = list(tuple(row))
        r[7] = bool(r[7])
        return cls(*r)  # type: ignore[arg-type]


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
        "id, case_ref, level, reasons, created_at, acknowledged_at, acknowledged_by, "
        "step, next_step_at, paging_from, trigger_sealed"
    )
    id: int
    case_ref: str
    level: str
    reasons: tuple[str, ...]
    created_at: str
    acknowledged_at: str | None
    acknowledged_by: str | None
    step: int = 0  # paging steps already fired
    next_step_at: str | None = None
    paging_from: str | None = None
    trigger_sealed: bytes | None = None

    @classmethod
    def from_row(cls, row: sqlite3.Row | tuple[object, ...]) -> EscalationRow:
        r = list(tuple(row))
        r[3] = tuple(json.loads(str(r[3])))
        if r[10] is not None:
            r[10] = bytes(r[10])  # type: ignore[arg-type]
        return cls(*r)  # type: ignore[arg-type]


@dataclass(frozen=True)
class DeliveryRow:
    """One message to one member of staff (or the staff chat), written before it is sent."""

    COLUMNS: ClassVar[str] = (
        "id, kind, escalation_id, case_ref, recipient, priority, body_sealed, created_at, "
        "attempts, sending_since, sent_at, message_id, detail"
    )
    id: int
    kind: str  # alert | followup | digest | flood
    escalation_id: int | None
    case_ref: str | None
    recipient: str  # 'staff_chat' or 'dm:<name>'
    priority: int
    body_sealed: bytes | None
    created_at: str
    attempts: int
    sending_since: str | None
    sent_at: str | None
    message_id: int | None
    detail: str | None = None  # flood: 'messages' or 'reports'

    @classmethod
    def from_row(cls, row: sqlite3.Row | tuple[object, ...]) -> DeliveryRow:
        r = list(tuple(row))
        if r[6] is not None:
            r[6] = bytes(r[6])  # type: ignore[arg-type]
        return cls(*r)  # type: ignore[arg-type]


@dataclass(frozen=True)
class CaseEvent:
    """A line of a case's timeline: who did what, when. Never content in the clear."""

    COLUMNS: ClassVar[str] = "id, at, case_ref, actor, action, detail, sealed, for_reporter"
    id: int
    at: str
    case_ref: str | None
    actor: str
    action: str
    detail: str | None
    sealed: bytes | None
    for_reporter: bytes | None

    @classmethod
    def from_row(cls, row: sqlite3.Row | tuple[object, ...]) -> CaseEvent:
        r = list(tuple(row))
        for i in (6, 7):
            if r[i] is not None:
                r[i] = bytes(r[i])  # type: ignore[arg-type]
        return cls(*r)  # type: ignore[arg-type]


@dataclass(frozen=True)
class PagerHolder:
    """Who took the pager with /oncall or /handover, and until when."""

    name: str
    since: str
    until: str
