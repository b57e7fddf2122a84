"""The staff side of a case, free of Telegram: alert wording, acknowledgement, reply routing.

Nothing this module produces for staff may identify a reporter: alerts carry the reference,
level, audience and the *reasons* (rule or answer ids), never the reporter's words or ids. The
words are read with a staff key (`safeguard reports show REF`).
"""

from __future__ import annotations

import html
import logging
from datetime import datetime
from zoneinfo import ZoneInfo

from bot.crypto import BotCrypto
from bot.dialogue.content import Content
from bot.errors import TamperedError
from bot.storage.base import EscalationRow
from bot.storage.sqlite import SqliteStore

log = logging.getLogger("safeguard.escalation")

STAFF_TIMEZONE = ZoneInfo("Europe/London")


def local_time(iso: str) -> str:
    return datetime.fromisoformat(iso).astimezone(STAFF_TIMEZONE).strftime("%a %d %b %H:%M")


class StaffDesk:
    def __init__(self, store: SqliteStore, crypto: BotCrypto, content: Content) -> None:
        self.store = store
        self.crypto = crypto
        self.w = content.wording.staff

    async def alert_text(self, escalation: EscalationRow) -> str:
        case = await self.store.get_case(escalation.case_ref)
        reasons = ", ".join(html.escape(self.readable(r)) for r in escalation.reasons)
        text = self.w.escalation.format(
            level_label=html.escape(self.w.level_labels.get(escalation.level, escalation.level)),
            ref=escalation.case_ref,
            audience=html.escape(self.w.audience_labels.get(case.audience or "unknown", "")),
            reasons=reasons or "-",
            raised_at=local_time(escalation.created_at),
        )
        if escalation.acknowledged_at:
            text += "\n" + self.w.acknowledged.format(
                name=html.escape(escalation.acknowledged_by or "?"),
                time=local_time(escalation.acknowledged_at),
            )
        return text.strip()

    def readable(self, reason: str) -> str:
        """'rule:danger_now' -> 'rule: danger now'; 'model:embedded:self_harm 0.93' ->
        'model: self harm 0.93'; answers use the wording file."""
        if reason in self.w.reasons:
            return self.w.reasons[reason]
        kind, _, rest = reason.partition(":")
        if kind == "model":
            rest = rest.partition(":")[2] or rest  # drop the engine name
        return f"{kind}: {rest.replace('_', ' ')}" if rest else reason

    async def acknowledge(self, escalation_id: int, by: str) -> tuple[bool, EscalationRow]:
        """Record who acknowledged; (False, row) if it was already acknowledged."""
        async with self.store.transaction() as tx:
            first = await tx.acknowledge(escalation_id, by)
        row = await self.store.get_escalation(escalation_id)
        if first:
            log.info("alert_acknowledged case=%s escalation=%s", row.case_ref, escalation_id)
        return first, row

    async def reply_address(self, ref: str) -> int | None:
        """The chat a staff reply goes to, or None if the reporter declined or it is gone."""
        case = await self.store.get_case(ref)  # NotFoundError for an unknown reference
        if not case.can_reply:
            return None
        sealed = await self.store.reply_handle(ref)
        if sealed is None:
            return None
        try:
            return self.crypto.open_reply_handle(ref, sealed)
        except TamperedError:
            log.error("reply_handle_unreadable case=%s", ref)
            return None
