"""Runs one reporter's turn: unseal the draft, ask the engine, seal and store, then reply.

The order matters and is the point of this module:
1. everything the turn decided (answer, alert, report, the update id) is committed in one
   transaction *before* any reply is sent, so a crash never loses an answer or an alert and a
   re-delivered update is recognised;
2. the alert's outbox row is in that same transaction, so the staff chat is told even if the
   process dies right after;
3. only then are replies sent, signposting first.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from bot.config import FloodSettings
from bot.crypto import BotCrypto
from bot.dialogue.content import Content
from bot.dialogue.draft import DONE, Draft
from bot.dialogue.engine import (
    ClearChat,
    DraftErased,
    Engine,
    Event,
    FollowUp,
    Inbound,
    Output,
    RemoveInbound,
    Reply,
    ReplyConsent,
    Submitted,
    Turn,
    UrgentSignal,
)
from bot.dialogue.flood import FloodGuard, FloodVerdict
from bot.errors import NotFoundError, StorageError, TamperedError
from bot.escalation.desk import replies_for_reporter
from bot.escalation.paging import NOTICE_PRIORITY, Paging, followup_context
from bot.escalation.policy import STAFF_CHAT, dm
from bot.reports.reference import normalise_reference
from bot.storage.sqlite import SqliteStore, Tx, iso
from nlu.pipeline import Nlu
from nlu.types import ParseResult

log = logging.getLogger("safeguard.dialogue")

# Saving a turn that failed (database locked or full) is tried again after 1 s, 2 s, 4 s ...
RETRY_FIRST_SECONDS = 1.0
RETRY_MAX_SECONDS = 30.0


class Messenger(Protocol):
    """How replies reach the reporter: Telegram or the terminal."""

    async def send(self, reply: Reply) -> list[int]:
        """Show a reply; return the ids of the messages it became (for clearing later)."""
        ...

    async def remove_inbound(self) -> None: ...

    async def clear(self, message_ids: Sequence[int]) -> None: ...


@dataclass(frozen=True)
class Origin:
    """Where a turn came from. Ids here are used in memory only, never stored in the clear."""

    reporter_id: int
    update_id: int | None = None
    message_id: int | None = None
    # The chat a staff reply would go to; sealed before it is stored, and only with consent.
    reply_address: int | None = None
    # Called once the turn is committed: the transport may then stop holding the update.
    on_saved: Callable[[], None] | None = None


class ReportingService:
    def __init__(
        self,
        content: Content,
        store: SqliteStore,
        crypto: BotCrypto,
        nlu: Nlu,
        paging: Paging,
        on_alert: Callable[[], None] | None = None,
        flood: FloodGuard | None = None,
    ) -> None:
        self.content = content
        self.engine = Engine(content)
        self.store = store
        self.crypto = crypto
        self.nlu = nlu
        self.paging = paging
        self._on_alert = on_alert
        self.flood = flood or FloodGuard(FloodSettings())
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def _lock_for(self, pseudonym: str) -> asyncio.Lock:
        lock = self._locks.get(pseudonym)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[pseudonym] = lock
        return lock

    async def track_outbound(self, chat_id: int, ref: str, message_ids: Sequence[int]) -> None:
        """The team sent the reporter something (a reply, "a person has seen it"): remember
        the messages so Leave now deletes them too. With no conversation open, what the
        reporter types next is added to that case, as an answer to the team."""
        if not message_ids:
            return
        # A private chat's id is the user's id, so this is the reporter's pseudonym.
        pseudonym = self.crypto.pseudonym_for(chat_id)
        async with self._lock_for(pseudonym):
            draft = await self._load_draft(pseudonym, chat_id) or Draft(step=DONE, case_ref=ref)
            draft.track(list(message_ids))
            try:
                async with self.store.transaction(grouped=True) as tx:
                    await tx.save_draft(pseudonym, self._seal_draft(pseudonym, draft))
            except StorageError as exc:
                log.warning("trace_not_saved error=%s", type(exc).__name__)

    async def understand(self, inbound: Inbound) -> ParseResult | None:
        """Every word the reporter sends goes through the NLU, at any step."""
        if inbound.text:
            return await self.nlu.parse(inbound.text)
        return None

    async def handle(self, origin: Origin, inbound: Inbound, messenger: Messenger) -> None:
        pseudonym = self.crypto.pseudonym_for(origin.reporter_id)
        # Button presses are answers to the bot's own questions; words and media can flood.
        verdict = (
            self.flood.note(self.crypto.rate_limit_pseudonym_for(origin.reporter_id))
            if inbound.kind != "button"
            else FloodVerdict()
        )
        # One turn at a time per reporter: two quick messages must not race on the draft.
        # Only deciding and saving take turns; answers go out after, so a reporter whose last
        # answer waits for Telegram's pace can still raise an alarm at once.
        async with self._lock_for(pseudonym):
            turn = await self._decide_and_store_patiently(pseudonym, origin, inbound, messenger)
            if origin.on_saved is not None:
                origin.on_saved()
            if turn is None:
                turn = await self._unanswered(pseudonym, origin)
                if turn is None:
                    log.info("duplicate_update_ignored")
                    return
                log.warning("unanswered_update_answered")
            if verdict.slowed:
                await self._slow_down(turn, verdict)
        sent_ids = await self._deliver(turn, messenger)
        # Answered only if what was to be said went out: a reply Telegram never took (resets,
        # an outage longer than the retries) leaves the update unanswered, so the reporter's
        # next message says it again, the 999 line first after an alarm.
        answered = bool(sent_ids) or not any(isinstance(o, Reply) for o in turn.outputs)
        if turn.draft is not None and (sent_ids or origin.message_id):
            await self._note_answered(pseudonym, origin, sent_ids, answered=answered)

    async def _note_answered(
        self, pseudonym: str, origin: Origin, sent_ids: list[int], *, answered: bool
    ) -> None:
        """Remember the messages (Leave now deletes them) and, if `answered`, that this update
        was, in the draft as it is now: later turns may have been saved meanwhile."""
        async with self._lock_for(pseudonym):
            draft = await self._load_draft(pseudonym)
            if draft is None:
                return  # left meanwhile: nothing to clear later
            draft.track([i for i in (origin.message_id, *sent_ids) if i is not None])
            if answered and origin.update_id is not None:
                draft.answered_update = max(draft.answered_update or 0, origin.update_id)
            try:
                async with self.store.transaction(grouped=True) as tx:
                    await tx.save_draft(pseudonym, self._seal_draft(pseudonym, draft))
            except StorageError as exc:
                # The answers are safe; only the list of messages to clear on exit is stale.
                log.warning("trace_not_saved error=%s", type(exc).__name__)

    async def _unanswered(self, pseudonym: str, origin: Origin) -> Turn | None:
        """An update already saved, delivered again. Normally Telegram repeating itself:
        ignore it. But if its answer never went out (the bot was killed in between), the
        reporter would be left in silence, perhaps after saying they are in danger."""
        draft = await self._load_draft(pseudonym)
        if draft is None or origin.update_id is None:
            return None
        if draft.answered_update is not None and draft.answered_update >= origin.update_id:
            return None
        return self.engine.where_we_are(draft)

    async def _decide_and_store_patiently(
        self, pseudonym: str, origin: Origin, inbound: Inbound, messenger: Messenger
    ) -> Turn | None:
        """A database that stays locked or full must not lose what was sent (it may be a
        child in danger): say so once, with the 999 line, and keep trying. Telegram is not told
        the update was handled until this returns, so a restart meanwhile delivers it again."""
        delay = RETRY_FIRST_SECONDS
        told = False
        while True:
            try:
                return await self._decide_and_store(pseudonym, origin, inbound)
            except StorageError as exc:
                log.error("turn_not_saved error=%s retry_in=%.0f", type(exc).__name__, delay)
                if not told:
                    told = True
                    await messenger.send(Reply(self.content.wording.something_went_wrong))
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_SECONDS)

    async def _slow_down(self, turn: Turn, verdict: FloodVerdict) -> None:
        """Over the flood limit: what they sent is kept and was checked for danger. Answer
        only urgent turns (signposting) and, once, why the bot has gone quiet; tell staff."""
        urgent = any(isinstance(e, UrgentSignal) for e in turn.events)
        if not urgent:
            notice = [Reply(self.content.wording.flood_slow_down)] if verdict.tell_reporter else []
            turn.outputs = [o for o in turn.outputs if not isinstance(o, Reply)] + notice
        if not verdict.tell_staff:
            return
        ref = turn.draft.case_ref if turn.draft is not None else None
        try:
            async with self.store.transaction() as tx:
                await self._flag_flood(tx, ref, "messages")
        except StorageError as exc:
            log.warning("flood_flag_not_saved error=%s", type(exc).__name__)
            return
        if self._on_alert is not None:
            self._on_alert()

    async def _flag_flood(self, tx: Tx, ref: str | None, what: str) -> None:
        await tx.add_delivery("flood", STAFF_CHAT, NOTICE_PRIORITY, case_ref=ref, detail=what)
        await tx.add_event(ref, "bot", "flood_flagged", what.split(":", 1)[0])
        log.warning("flood_flagged what=%s case=%s", what.split(":", 1)[0], ref)

    async def _decide_and_store(
        self, pseudonym: str, origin: Origin, inbound: Inbound
    ) -> Turn | None:
        if origin.update_id is not None and await self.store.was_processed(origin.update_id):
            return None
        draft = await self._load_draft(pseudonym, origin.reporter_id)
        # Their last turn was saved but its answer may never have gone out (the bot was
        # killed in between, or Telegram never took it): someone who raised an alarm is given
        # the numbers again, and someone who sent a report its reference code, which they
        # need to add to it or to read the team's replies.
        ref = draft.case_ref if draft is not None else None
        last_unanswered = (
            draft is not None
            and ref is not None
            and draft.saved_update is not None
            and draft.saved_update != draft.answered_update
        )
        unanswered_alarm = last_unanswered and draft is not None and bool(draft.alerted)
        unanswered_submission = last_unanswered and draft is not None and draft.step == DONE
        if inbound.kind == "followup":
            turn = await self._attach(draft, inbound.text)
        else:
            turn = self.engine.handle(draft, inbound, await self.understand(inbound))
            self._add_when_to_expect_reply(turn)
        if unanswered_submission and ref is not None:
            again = Reply(self.content.wording.submitted_repeat.format(ref=ref))
            if again not in turn.outputs:
                turn.outputs.insert(0, again)
        if unanswered_alarm and ref is not None:
            repeat = Reply(self.content.wording.urgent_repeat.format(ref=ref), urgent=True)
            if repeat not in turn.outputs:
                turn.outputs.insert(0, repeat)
        alerted = False
        # A turn that only moves the conversation on (most of them) is committed together
        # with others; one that raises an alert or files a report has its own transaction.
        async with self.store.transaction(grouped=not turn.events) as tx:
            for event in turn.events:
                alerted |= await self._apply(tx, event, pseudonym, origin, inbound, turn.draft)
            if turn.draft is None:
                await tx.erase_draft(pseudonym)
            else:
                turn.draft.saved_update = origin.update_id
                await tx.save_draft(pseudonym, self._seal_draft(pseudonym, turn.draft))
            if origin.update_id is not None:
                await tx.mark_processed(origin.update_id)
        if alerted and self._on_alert is not None:
            self._on_alert()
        return turn

    async def _attach(self, draft: Draft | None, ref_text: str) -> Turn:
        ref = normalise_reference(ref_text)
        if ref is None:
            return Turn(draft=draft, outputs=[Reply(self.content.wording.followup_usage)])
        try:
            await self.store.get_case(ref)
        except NotFoundError:
            log.info("followup_reference_unknown")
            return self.engine.attach(draft, None, [])
        log.info("followup_attached case=%s", ref)
        replies = await replies_for_reporter(self.store, self.crypto, ref)
        return self.engine.attach(draft, ref, replies)

    def _add_when_to_expect_reply(self, turn: Turn) -> None:
        """A routine report sent out of hours waits for the morning: say so, honestly."""
        submitted = any(isinstance(e, Submitted) for e in turn.events)
        if not submitted or turn.draft is None or turn.draft.alerted:
            return
        now = datetime.now(UTC)
        rota = self.paging.rota
        if not self.paging.policy_for("routine").wait_for_working_hours:
            return
        if rota.is_working_time(now):
            return
        start = rota.next_working_start(now)
        if start is None:
            return
        when = start.strftime("%A at %H:%M").replace(" at 0", " at ")
        turn.outputs.append(Reply(self.content.wording.reply_expected.format(when=when)))

    async def _load_draft(self, pseudonym: str, reporter_id: int | None = None) -> Draft | None:
        sealed = await self.store.load_draft(pseudonym)
        if sealed is None and reporter_id is not None:
            return await self._adopt_earlier_draft(pseudonym, reporter_id)
        if sealed is None:
            return None
        try:
            return Draft.from_bytes(self.crypto.open_draft(pseudonym, sealed))
        except (TamperedError, ValueError, TypeError):
            # Unreadable (tampered, or a key rotated without migration): start afresh rather
            # than lock the reporter out. Nothing of it can be shown, so nothing is lost to them.
            log.error("draft_unreadable")
            return None

    async def _adopt_earlier_draft(self, pseudonym: str, reporter_id: int) -> Draft | None:
        """A report begun before the bot's secrets were rotated is stored under the reporter's
        earlier pseudonym: move it to the current one, so nobody loses a half-told report."""
        for earlier in self.crypto.earlier_pseudonyms_for(reporter_id):
            sealed = await self.store.load_draft(earlier)
            if sealed is None:
                continue
            try:
                draft = Draft.from_bytes(self.crypto.open_draft(earlier, sealed))
            except (TamperedError, ValueError, TypeError):
                log.error("draft_unreadable")
                return None
            async with self.store.transaction() as tx:
                await tx.erase_draft(earlier)
                await tx.save_draft(pseudonym, self._seal_draft(pseudonym, draft))
            log.info("draft_moved_to_new_pseudonym")
            return draft
        return None

    def _seal_draft(self, pseudonym: str, draft: Draft) -> bytes:
        return self.crypto.seal_draft(pseudonym, draft.to_bytes())

    async def _apply(
        self,
        tx: Tx,
        event: Event,
        pseudonym: str,
        origin: Origin,
        inbound: Inbound,
        draft: Draft | None,
    ) -> bool:
        """Carry out one domain event inside the turn's transaction. True if staff must hear."""
        audience = draft.audience if draft else None
        match event:
            case UrgentSignal(reference=ref, level=level, reasons=reasons):
                await tx.ensure_case(ref, pseudonym, audience)
                await tx.raise_case_level(ref, level.value)
                trigger = inbound.text or None
                snapshot = self._record(
                    ref, "alert", draft, level=level.value, reasons=list(reasons), trigger=trigger
                )
                await tx.add_record(ref, "alert", self.crypto.seal_report(ref, snapshot))
                now = datetime.now(UTC)
                waits_until = self.paging.paging_from(level.value, now)
                escalation_id = await tx.add_escalation(
                    ref,
                    level.value,
                    reasons,
                    paging_from=waits_until or iso(now),
                    trigger_sealed=self.paging.seal_trigger(ref, inbound.text),
                )
                if waits_until is None:
                    await self.paging.page_now(tx, escalation_id, ref, level.value, now)
                declined = draft is not None and _consent(draft) is False
                if origin.reply_address is not None and not declined:
                    await tx.set_reply_handle(
                        ref, self.crypto.seal_reply_handle(ref, origin.reply_address)
                    )
                log.warning(
                    "alert_raised case=%s level=%s escalation=%s", ref, level.value, escalation_id
                )
                return True
            case Submitted(reference=ref):
                assert draft is not None
                await tx.ensure_case(ref, pseudonym, audience)
                await tx.raise_case_level(ref, "routine")
                report = self._record(ref, "report", draft)
                await tx.add_record(ref, "report", self.crypto.seal_report(ref, report))
                await tx.mark_submitted(ref)
                await self._apply_consent(tx, ref, _consent(draft), origin)
                since = iso(datetime.now(UTC) - timedelta(days=1))
                count = await tx.reports_since(pseudonym, since)
                log.info("report_submitted case=%s", ref)
                if count == self.flood.settings.reports_per_day + 1:  # once, when first over
                    await self._flag_flood(tx, ref, f"reports:{count}")
                    return True
            case FollowUp(reference=ref, text=text):
                await tx.ensure_case(ref, pseudonym, audience)
                record = self._record(ref, "followup", None, text=text)
                await tx.add_record(ref, "followup", self.crypto.seal_report(ref, record))
                # Closing a case erased the way to reach them; writing again, having agreed
                # to replies, they can be answered again.
                if draft is not None and draft.case_ref == ref and _consent(draft):
                    await self._apply_consent(tx, ref, True, origin)
                await self._tell_staff_of_followup(tx, ref, text)
                log.info("followup_added case=%s", ref)
                return True
            case ReplyConsent(reference=ref, allowed=allowed) if ref is not None:
                await self._apply_consent(tx, ref, allowed, origin)
            case DraftErased():
                log.info("draft_erased")
        return False

    async def _tell_staff_of_followup(self, tx: Tx, ref: str, text: str) -> None:
        """A new message on a case reaches the staff chat (and whoever took the case) as new
        text from the bot, never a forward, which could show who sent it."""
        body = None
        if self.paging.settings.alert_text == "full":
            body = self.crypto.seal_transit(followup_context(ref), text.encode())
        recipients = [STAFF_CHAT]
        assigned = await tx.assigned_to(ref)
        if assigned is not None:
            recipients.append(dm(assigned))
        for recipient in recipients:
            await tx.add_delivery(
                "followup", recipient, NOTICE_PRIORITY, case_ref=ref, body_sealed=body
            )

    async def _apply_consent(self, tx: Tx, ref: str, allowed: bool | None, origin: Origin) -> None:
        if allowed and origin.reply_address is not None:
            await tx.set_reply_handle(ref, self.crypto.seal_reply_handle(ref, origin.reply_address))
        elif allowed is False:
            await tx.set_reply_handle(ref, None)

    def _record(self, ref: str, kind: str, draft: Draft | None, **extra: Any) -> bytes:
        """The plaintext of a sealed record: readable by staff without the wording files."""
        body: dict[str, Any] = {
            "reference": ref,
            "kind": kind,
            "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "language": self.content.language,
        }
        if draft is not None:
            body.update(self._answers_for_staff(draft))
        body.update(extra)
        return json.dumps(body, ensure_ascii=False).encode()

    def _answers_for_staff(self, draft: Draft) -> dict[str, Any]:
        w = self.content.wording
        answers = []
        steps = self.content.steps_for(draft.audience) if draft.audience else []
        for step_id in steps:
            answer = draft.answers.get(step_id)
            entry: dict[str, Any] = {"step": step_id, "label": w.summary_labels[step_id]}
            if answer is None:
                entry["answered"] = False
            elif answer.skipped:
                entry["skipped"] = True
            else:
                if answer.choice is not None:
                    entry["choice"] = answer.choice
                    option = w.options.get(step_id, {}).get(answer.choice)
                    if option is not None:
                        entry["choice_label"] = option.label
                if answer.text is not None:
                    entry["text"] = answer.text
            answers.append(entry)
        return {
            "audience": draft.audience,
            "answers": answers,
            "first_messages": draft.opening,
            "found_in_text": [{"entity": e, "value": v} for e, v in draft.noted],
            "changed_messages": draft.edits,
            "alerts": draft.alerted,
        }

    async def _deliver(self, turn: Turn, messenger: Messenger) -> list[int]:
        sent: list[int] = []
        for output in one_message_per_turn(turn.outputs):
            match output:
                case Reply():
                    sent.extend(await messenger.send(output))
                case RemoveInbound():
                    await messenger.remove_inbound()
                case ClearChat(message_ids=ids):
                    await messenger.clear(ids)
        return sent


def one_message_per_turn(outputs: Sequence[Output]) -> list[Output]:
    """Consecutive replies joined into one message (the 999 line stays first).

    Telegram lets a bot send about one message a second to a person; two or three at once
    earn 429s under load, and each is a separate buzz on a phone that may be watched. A reply
    with buttons ends a message, because the buttons belong under the last words.
    """
    merged: list[Output] = []
    for output in outputs:
        previous = merged[-1] if merged else None
        if isinstance(output, Reply) and isinstance(previous, Reply) and not previous.buttons:
            merged[-1] = Reply(
                f"{previous.html}\n\n{output.html}",
                output.buttons,
                urgent=previous.urgent or output.urgent,
            )
        else:
            merged.append(output)
    return merged


def _consent(draft: Draft) -> bool | None:
    answer = draft.answers.get("contact")
    if answer is None or answer.choice not in ("yes", "no"):
        return None
    return answer.choice == "yes"
