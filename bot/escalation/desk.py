"""The staff side of a case, free of Telegram: what staff see and what they can do.

Nothing this module shows staff may identify a reporter: alerts carry the reference, level,
audience and the *reasons* (rule or answer ids), and the reporter's own words only when the
team chose `escalation.alert_text = "full"`. Every staff action is recorded in the case
timeline by the staff member's rota name, never their Telegram id. All wording is in
`config/wording/<language>.yml` under `staff:`.
"""

from __future__ import annotations

import html
import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bot.crypto import BotCrypto, StaffKey
from bot.dialogue.content import Content
from bot.errors import NotFoundError, NotReadableError, TamperedError
from bot.escalation.paging import Paging, followup_context, reply_context, trigger_context, utcnow
from bot.reports.answers import shown_answer
from bot.reports.reading import CaseReader
from bot.storage.base import CaseRow, DeliveryRow, EscalationRow
from bot.storage.sqlite import SqliteStore, iso

log = logging.getLogger("safeguard.escalation")

LEVEL_ORDER = ("immediate", "high", "routine", "none")
# A page sent this long after paging began is a re-escalation (or late), and says so.
REPAGE_AFTER_SECONDS = 1
QUEUE_LINES_PER_LEVEL = 15
# Characters of reasons and words per case in a combined alert.
COMBINED_CLIP = 60


@dataclass(frozen=True)
class AlertButton:
    label: str
    action: str  # "ack" | "take"
    escalation_id: int


@dataclass(frozen=True)
class StaffMessage:
    html: str
    buttons: tuple[tuple[AlertButton, ...], ...] = ()


@dataclass(frozen=True)
class ActionResult:
    """What a staff action did: `done` False when it changed nothing (already done)."""

    done: bool
    ref: str
    by: str | None = None
    acknowledged: bool = False  # it stopped paging (the reporter may be told a person saw it)


class StaffDesk:
    def __init__(
        self,
        store: SqliteStore,
        crypto: BotCrypto,
        content: Content,
        paging: Paging,
        staff_key: StaffKey | None = None,
    ) -> None:
        self.store = store
        self.crypto = crypto
        self.content = content
        self.paging = paging
        # Only when the operator unlocked it for this process (`safeguard run --unlock`).
        self.staff_key = staff_key
        self.w = content.wording.staff

    # ================================================================== what staff see
    def local_time(self, iso: str) -> str:
        return (
            datetime.fromisoformat(iso).astimezone(self.paging.rota.zone).strftime("%a %d %b %H:%M")
        )

    def level_label(self, level: str) -> str:
        return html.escape(self.w.level_labels.get(level, level))

    def readable(self, reason: str) -> str:
        """'rule:danger_now' -> 'rule: danger now'; 'model:embedded:self_harm 0.93' ->
        'model: self harm 0.93'; answers use the wording file."""
        if reason in self.w.reasons:
            return self.w.reasons[reason]
        kind, _, rest = reason.partition(":")
        if kind == "model":
            rest = rest.partition(":")[2] or rest  # drop the engine name
        return f"{kind}: {rest.replace('_', ' ')}" if rest else reason

    async def render(self, rows: Sequence[DeliveryRow], resent: bool = False) -> StaffMessage:
        """The message for rows delivered together: one alert, several alerts combined,
        a reporter's follow-up, or the digest."""
        kind = rows[0].kind
        if kind == "digest":
            return StaffMessage(await self.digest_text())
        if kind == "followup":
            return StaffMessage(await self._followup_text(rows[0]))
        if kind == "flood":
            return StaffMessage(self._flood_text(rows[0]))
        escalation_ids = list(dict.fromkeys(r.escalation_id for r in rows if r.escalation_id))
        escalations = await self.store.escalations_by_id(escalation_ids)
        paged_at = {r.escalation_id: r.created_at for r in rows}
        message = await self.render_alerts(escalations, paged_at)
        if resent:
            return StaffMessage(f"{self.w.resent_note}\n{message.html}", message.buttons)
        return message

    def _flood_text(self, row: DeliveryRow) -> str:
        w = self.w
        case = w.flood_case.format(ref=row.case_ref) if row.case_ref else ""
        what, _, count = (row.detail or "messages").partition(":")
        if what == "reports":
            return w.flood_reports.format(count=count or "many", case=case)
        return w.flood_messages.format(case=case)

    async def render_alerts(
        self, escalations: Sequence[EscalationRow], paged_at: dict[int | None, str] | None = None
    ) -> StaffMessage:
        blocks: list[str] = []
        buttons: list[tuple[AlertButton, ...]] = []
        combined = len(escalations) > 1
        cases = await self.store.cases_by_ref(list({e.case_ref for e in escalations}))
        for escalation in escalations:
            case = cases[escalation.case_ref]
            if combined:
                blocks.append(self._alert_line(escalation, case))
            else:
                blocks.append(
                    await self._alert_block(escalation, case, (paged_at or {}).get(escalation.id))
                )
            row: list[AlertButton] = []
            suffix = f" {escalation.case_ref}" if combined else ""
            if escalation.acknowledged_at is None:
                row.append(AlertButton(self.w.acknowledge_button + suffix, "ack", escalation.id))
            if case.assigned_to is None and case.status == "open":
                row.append(AlertButton(self.w.take_button + suffix, "take", escalation.id))
            if row:
                buttons.append(tuple(row))
        text = ("\n\n" if not combined else "\n").join(blocks)
        if combined:
            text = self.w.combined_header.format(count=len(escalations)) + "\n\n" + text
        return StaffMessage(text, tuple(buttons))

    async def _alert_block(
        self, escalation: EscalationRow, case: CaseRow, paged_at: str | None
    ) -> str:
        reasons = ", ".join(html.escape(self.readable(r)) for r in escalation.reasons)
        lines = [
            self.w.escalation.format(
                level_label=self.level_label(escalation.level),
                ref=escalation.case_ref,
                audience=html.escape(self.w.audience_labels.get(case.audience or "unknown", "")),
                reasons=reasons or "-",
                raised_at=self.local_time(escalation.created_at),
            ).strip()
        ]
        words = self._trigger_words(escalation)
        lines.append(
            self.w.their_words.format(text=html.escape(words))
            if words
            else self.w.read_with.format(ref=escalation.case_ref)
        )
        started = escalation.paging_from or escalation.created_at
        if paged_at and escalation.acknowledged_at is None:
            waited = datetime.fromisoformat(paged_at) - datetime.fromisoformat(started)
            if waited.total_seconds() >= REPAGE_AFTER_SECONDS:
                lines.append(self.w.still_waiting.format(waited=self._duration(waited)))
        if escalation.acknowledged_at:
            lines.append(
                self.w.acknowledged.format(
                    name=html.escape(escalation.acknowledged_by or "?"),
                    time=self.local_time(escalation.acknowledged_at),
                )
            )
        if case.assigned_to:
            lines.append(self.w.taken.format(name=html.escape(case.assigned_to)))
        if case.status == "closed":
            lines.append(self.w.closed_line.format(outcome=self._outcome(case.outcome)))
        return "\n".join(lines)

    def _alert_line(self, escalation: EscalationRow, case: CaseRow) -> str:
        """One case in a combined message: short, so a burst fits one phone screen."""
        reasons = ", ".join(self.readable(r) for r in escalation.reasons)
        audience = self.w.audience_labels.get(case.audience or "unknown", "")
        line = (
            f"• <b>{self.level_label(escalation.level)}</b> <code>{escalation.case_ref}</code> · "
            f"{html.escape(audience)} · {html.escape(_clip(reasons, COMBINED_CLIP))}"
        )
        words = self._trigger_words(escalation)
        if words:
            line += f"\n  <i>{html.escape(_clip(words, COMBINED_CLIP))}</i>"
        if escalation.acknowledged_at:
            line += " ✅ " + html.escape(escalation.acknowledged_by or "?")
        if case.assigned_to:
            line += " 👤 " + html.escape(case.assigned_to)
        return line

    def _trigger_words(self, escalation: EscalationRow) -> str | None:
        if escalation.trigger_sealed is None:
            return None
        try:
            return self.crypto.open_transit(
                trigger_context(escalation.case_ref), escalation.trigger_sealed
            ).decode()
        except TamperedError:
            log.error("trigger_unreadable case=%s", escalation.case_ref)
            return None

    async def _followup_text(self, row: DeliveryRow) -> str:
        ref = row.case_ref or "?"
        case = await self.store.get_case(ref)
        words = None
        if row.body_sealed is not None:
            try:
                words = self.crypto.open_transit(followup_context(ref), row.body_sealed).decode()
            except TamperedError:
                log.error("followup_unreadable case=%s", ref)
        lines = [self.w.followup_header.format(ref=ref)]
        lines.append(
            self.w.their_words.format(text=html.escape(words))
            if words
            else self.w.read_with.format(ref=ref)
        )
        if case.status == "closed":
            lines.append(self.w.followup_on_closed.format(ref=ref))
        return "\n".join(lines)

    async def queue_text(self) -> str:
        cases = await self.store.open_cases()
        if not cases:
            return self.w.queue_empty
        waiting = Counter(e.case_ref for e in await self.store.unacknowledged())
        now = utcnow()
        lines = [self.w.queue_header.format(count=len(cases))]
        for level in LEVEL_ORDER:
            at_level = [c for c in cases if c.level == level]
            if not at_level:
                continue
            lines.append(f"\n<b>{self.level_label(level)}</b> ({len(at_level)})")
            # Most urgent first within a level: unacknowledged, then oldest.
            at_level.sort(key=lambda c: (waiting[c.ref] == 0, c.created_at))
            for case in at_level[:QUEUE_LINES_PER_LEVEL]:
                lines.append(self._queue_line(case, waiting[case.ref], now))
            if len(at_level) > QUEUE_LINES_PER_LEVEL:
                lines.append(self.w.queue_more.format(count=len(at_level) - QUEUE_LINES_PER_LEVEL))
        return "\n".join(lines)

    def _queue_line(self, case: CaseRow, unacknowledged: int, now: datetime) -> str:
        state = []
        if unacknowledged:
            state.append(self.w.queue_unacknowledged)
        if case.assigned_to:
            state.append(self.w.queue_taken.format(name=html.escape(case.assigned_to)))
        if case.submitted_at is None:
            state.append(self.w.queue_in_progress)
        return self.w.queue_line.format(
            ref=case.ref,
            age=self._age(case.created_at, now),
            state=" · ".join(state) or self.w.queue_no_one_yet,
        )

    def _age(self, iso: str, now: datetime) -> str:
        return self._duration(now - datetime.fromisoformat(iso))

    def _duration(self, span: timedelta) -> str:
        seconds = int(span.total_seconds())
        if seconds < 60:
            return self.w.age_seconds.format(seconds=max(seconds, 0))
        minutes = seconds // 60
        if minutes < 60:
            return self.w.age_minutes.format(minutes=max(minutes, 0))
        if minutes < 48 * 60:
            return self.w.age_hours.format(hours=minutes // 60, minutes=minutes % 60)
        return self.w.age_days.format(days=minutes // (24 * 60))

    async def digest_text(self) -> str:
        cases = await self.store.open_cases()
        levels = Counter(c.level for c in cases)
        unacknowledged = await self.store.unacknowledged()
        now = utcnow()
        oldest = min(cases, key=lambda c: c.created_at) if cases else None
        text = self.w.digest.format(
            date=now.astimezone(self.paging.rota.zone).strftime("%A %d %B"),
            open=len(cases),
            immediate=levels["immediate"],
            high=levels["high"],
            routine=levels["routine"] + levels["none"],
            unacknowledged=len({e.case_ref for e in unacknowledged}),
            oldest=(
                self.w.digest_oldest.format(ref=oldest.ref, age=self._age(oldest.created_at, now))
                if oldest
                else "-"
            ),
        )
        return text.strip()

    async def case_text(self, ref: str, by: str | None = None) -> str:
        """A case's page for the staff chat; with the staff key unlocked, its content too,
        and then the viewing is written to the audit trail."""
        case = await self.store.get_case(ref)  # NotFoundError for an unknown reference
        w = self.w
        lines = [
            w.case_header.format(
                ref=ref,
                status=w.status_labels.get(case.status, case.status),
                level=self.level_label(case.level),
                audience=html.escape(w.audience_labels.get(case.audience or "unknown", "")),
            ),
            w.case_dates.format(
                opened=self.local_time(case.created_at),
                sent=self.local_time(case.submitted_at) if case.submitted_at else w.not_sent_yet,
            ),
            w.case_owner.format(
                name=html.escape(case.assigned_to) if case.assigned_to else w.nobody_yet,
                replies=w.replies_allowed if case.can_reply else w.replies_not_allowed,
            ),
        ]
        if case.status == "closed":
            lines.append(w.closed_line.format(outcome=self._outcome(case.outcome)))
        escalations = await self.store.escalations_for(ref)
        if escalations:
            lines.append(f"\n<b>{w.alerts_title}</b>")
            for e in escalations:
                state = (
                    w.acknowledged.format(
                        name=html.escape(e.acknowledged_by or "?"),
                        time=self.local_time(e.acknowledged_at),
                    )
                    if e.acknowledged_at
                    else w.waiting_state.format(step=e.step)
                )
                reasons = ", ".join(html.escape(self.readable(r)) for r in e.reasons)
                lines.append(
                    f"• {self.level_label(e.level)} {self.local_time(e.created_at)}: "
                    f"{reasons or '-'} · {state}"
                )
        events = await self.store.case_events(ref)
        if events:
            lines.append(f"\n<b>{w.timeline_title}</b>")
            for event in events:
                label = w.event_labels.get(event.action, event.action)
                detail = f" ({html.escape(event.detail)})" if event.detail else ""
                lines.append(
                    f"• {self.local_time(event.at)} · {html.escape(event.actor)} · {label}{detail}"
                )
        lines.append("")
        if self.staff_key is None:
            lines.append(w.how_to_read.format(ref=ref))
            return "\n".join(lines)
        lines.append(await self._content_lines(ref))
        async with self.store.transaction() as tx:
            await tx.audit(
                by or "staff", "case_viewed", ref, f"in Telegram, {self.staff_key.name}'s key"
            )
        return "\n".join(lines)

    async def _content_lines(self, ref: str) -> str:
        """The sealed content, for a process whose operator unlocked the staff key."""
        assert self.staff_key is not None
        w = self.w
        out = [f"<b>{w.content_title}</b>"]
        reader = CaseReader(self.store, self.staff_key)
        for record in await self.store.records_for(ref):
            try:
                body: dict[str, Any] = json.loads(await reader.open(ref, record.sealed))
            except (TamperedError, NotReadableError):
                out.append(w.record_unreadable)
                continue
            out.append(
                f"\n<i>{w.record_labels.get(record.kind, record.kind)}, "
                f"{self.local_time(record.created_at)}</i>"
            )
            if body.get("trigger"):
                out.append(w.their_words.format(text=html.escape(str(body["trigger"]))))
            for line in body.get("first_messages", []):
                out.append(f"“{html.escape(str(line))}”")
            for answer in body.get("answers", []):
                out.append(f"{html.escape(answer['label'])}: {html.escape(shown_answer(answer))}")
            if record.kind == "followup":
                out.append(f"“{html.escape(str(body.get('text', '')))}”")
        for event in await self.store.case_events(ref):
            if event.sealed is None:
                continue
            try:
                note = (await reader.open(ref, event.sealed)).decode()
            except (TamperedError, NotReadableError):
                out.append(w.record_unreadable)
                continue
            out.append(
                w.note_line.format(
                    name=html.escape(event.actor),
                    time=self.local_time(event.at),
                    text=html.escape(note),
                )
            )
        return "\n".join(out)

    def _outcome(self, code: str | None) -> str:
        return html.escape(self.w.outcomes.get(code or "", code or "-"))

    # ================================================================== what staff do
    async def acknowledge(self, escalation_id: int, by: str) -> ActionResult:
        """Stop the paging for the alert's case. Not done if someone already had."""
        escalation = await self.store.get_escalation(escalation_id)
        ref = escalation.case_ref
        async with self.store.transaction() as tx:
            acknowledged = await tx.acknowledge(ref, by)
            if acknowledged:
                await tx.add_event(ref, by, "acknowledged")
        if acknowledged:
            log.info("alert_acknowledged case=%s escalations=%s", ref, len(acknowledged))
            return ActionResult(True, ref, by, acknowledged=True)
        latest = await self.store.get_escalation(escalation_id)
        return ActionResult(False, ref, latest.acknowledged_by)

    async def take(self, ref: str, by: str) -> ActionResult:
        """Take the case (and acknowledge any alert still paging). Not done if someone else
        has it."""
        case = await self.store.get_case(ref)
        if case.assigned_to is not None and case.assigned_to != by:
            return ActionResult(False, ref, case.assigned_to)
        async with self.store.transaction() as tx:
            await tx.assign(ref, by)
            acknowledged = bool(await tx.acknowledge(ref, by))
            if acknowledged:
                await tx.add_event(ref, by, "acknowledged")
            await tx.add_event(ref, by, "taken")
        log.info("case_taken case=%s", ref)
        return ActionResult(True, ref, by, acknowledged=acknowledged)

    async def note(self, ref: str, by: str, text: str) -> None:
        await self.store.get_case(ref)
        async with self.store.transaction() as tx:
            await tx.add_event(ref, by, "note", sealed=self.crypto.seal_report(ref, text.encode()))
        log.info("case_note_added case=%s", ref)

    async def close(self, ref: str, by: str, outcome: str) -> ActionResult:
        await self.store.get_case(ref)
        async with self.store.transaction() as tx:
            closed = await tx.close_case(ref, outcome)
            if closed:
                # A closed case pages nobody.
                if await tx.acknowledge(ref, by):
                    await tx.add_event(ref, by, "acknowledged")
                await tx.add_event(ref, by, "closed", outcome)
        if closed:
            log.info("case_closed case=%s outcome=%s", ref, outcome)
        return ActionResult(closed, ref, by)

    async def reopen(self, ref: str, by: str) -> ActionResult:
        await self.store.get_case(ref)
        async with self.store.transaction() as tx:
            reopened = await tx.reopen_case(ref)
            if reopened:
                await tx.add_event(ref, by, "reopened")
        if reopened:
            log.info("case_reopened case=%s", ref)
        return ActionResult(reopened, ref, by)

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

    async def record_reply(self, ref: str, by: str, text: str) -> None:
        """A reply reached the reporter: kept (sealed) so they can read it again with
        /followup while the case is open, and a sealed copy for the staff record."""
        async with self.store.transaction() as tx:
            await tx.add_event(
                ref,
                by,
                "replied",
                sealed=self.crypto.seal_report(ref, text.encode()),
                for_reporter=self.crypto.seal_transit(reply_context(ref), text.encode()),
            )
        log.info("staff_reply_sent case=%s", ref)

    async def replies_for_reporter(self, ref: str) -> list[str]:
        return await replies_for_reporter(self.store, self.crypto, ref)

    async def take_pager(self, name: str, by: str) -> datetime:
        now = utcnow()
        until = self.paging.pager_until(now)
        async with self.store.transaction() as tx:
            await tx.take_pager(name, iso(until))
            await tx.add_event(None, by, "took_pager" if name == by else "handed_over", name)
        log.info("pager_taken")
        return until

    async def refused(self, action: str, ref: str | None = None) -> None:
        """Someone who is not staff tried a staff action: recorded, without who it was."""
        log.warning("staff_action_refused action=%s", action)
        if ref is not None:
            try:
                await self.store.get_case(ref)
            except NotFoundError:
                ref = None  # the timeline only holds events of cases that exist
        async with self.store.transaction() as tx:
            await tx.add_event(ref, "not_staff", "refused", action)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


async def replies_for_reporter(store: SqliteStore, crypto: BotCrypto, ref: str) -> list[str]:
    """The team's replies on an open case, for the reporter to read again (`/followup`)."""
    replies = []
    for event in await store.case_events(ref):
        if event.action != "replied" or event.for_reporter is None:
            continue
        try:
            replies.append(crypto.open_transit(reply_context(ref), event.for_reporter).decode())
        except TamperedError:
            log.error("reply_unreadable case=%s", ref)
    return replies
