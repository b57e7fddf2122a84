"""The reporting conversation, free of any transport.

`Engine.handle(draft, inbound, understood)` takes the reporter's saved draft (or None for a new
conversation), what they just did, and what the NLU made of their words, and returns the
new draft, the replies to show, and the domain events for the service to carry out (escalate,
submit, erase). It does no I/O, so every path is unit-testable and the terminal chat and Telegram
behave the same.

Urgency is decided outside (nlu.pipeline: the model plus the safety rules); this module decides
only what to *say* about it: signposting to 999 always comes first in the replies. It also
answers questions about the service in place, and uses entities found in free text (an age, a
time, a town) to fill in questions the reporter would otherwise be asked again.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from bot.dialogue.content import AUDIENCES, Content
from bot.dialogue.draft import AUDIENCE, CHANGE, DONE, SUMMARY, Answer, Draft
from bot.reports.reference import new_reference
from nlu.types import Level, ParseResult

# Answers longer than this are kept up to the limit; Telegram caps a message at 4096 characters,
# the terminal does not, and an unbounded draft would be a way to fill the disk.
MAX_ANSWER_CHARS = 8000
SUMMARY_ANSWER_CHARS = 250
SELF_HARM_RULES = frozenset({"rule:self_harm_now", "rule:suicidal_intent"})
SELF_HARM_INTENT = "self_harm"
# A question about the service is answered in place only when the model is sure and the message
# is short; a long message is more likely a report that mentions the service.
SERVICE_CONFIDENCE = 0.6
SERVICE_MAX_WORDS = 20
MEDIA_DELETED = frozenset(
    {
        "photo",
        "video",
        "document",
        "animation",
        "video_note",
        "voice",
        "audio",
        "location",
        "venue",  # a location with an address
        "live_photo",
        "contact",
        "story",
        "paid_media",
        "checklist",
    }
)

# "followup" is /followup REF: the service looks the case up and calls `Engine.attach`.
InboundKind = Literal["start", "help", "exit", "text", "button", "media", "edited", "followup"]


@dataclass(frozen=True)
class Inbound:
    """What the reporter did. For buttons, `action/step/value/turn` come from the callback."""

    kind: InboundKind
    text: str = ""
    action: str = ""
    step: str = ""
    value: str = ""
    turn: int = -1
    media_kind: str = ""


@dataclass(frozen=True)
class Button:
    label: str
    action: str
    step: str = ""
    value: str = ""
    turn: int = 0


@dataclass(frozen=True)
class Reply:
    html: str
    buttons: tuple[tuple[Button, ...], ...] = ()
    # The 999 line after an alarm: sent before anything else waiting for Telegram's pace.
    urgent: bool = False


@dataclass(frozen=True)
class RemoveInbound:
    """Delete the reporter's own message at once (media we must not hold)."""


@dataclass(frozen=True)
class ClearChat:
    """Delete every message of this conversation that Telegram still lets us delete."""

    message_ids: tuple[int, ...]


Output = Reply | RemoveInbound | ClearChat


@dataclass(frozen=True)
class UrgentSignal:
    reference: str
    level: Level
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Submitted:
    reference: str


@dataclass(frozen=True)
class FollowUp:
    reference: str
    text: str


@dataclass(frozen=True)
class ReplyConsent:
    reference: str | None
    allowed: bool


@dataclass(frozen=True)
class DraftErased:
    pass


Event = UrgentSignal | Submitted | FollowUp | ReplyConsent | DraftErased


@dataclass
class Turn:
    draft: Draft | None
    outputs: list[Output] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


class Engine:
    def __init__(self, content: Content) -> None:
        self.content = content
        self.w = content.wording

    # ----------------------------------------------------------------- entry point
    def handle(
        self, draft: Draft | None, inbound: Inbound, understood: ParseResult | None = None
    ) -> Turn:
        if inbound.kind == "exit" or (inbound.kind == "button" and inbound.action == "exit"):
            return self._exit(draft)

        is_new = draft is None
        turn = Turn(draft=draft if draft is not None else Draft())
        d = turn.draft
        assert d is not None

        urgent = understood is not None and understood.urgency.escalate
        if understood is not None:
            if urgent:
                self._raise_alarm(turn, d, understood.urgency.level, understood.urgency.reasons)
            d.note_entities((e.entity, e.value) for e in understood.model.entities)

        if is_new:
            turn.outputs.append(Reply(self.w.welcome))

        match inbound.kind:
            case "start":
                if d.step == DONE:
                    # A new report after sending one: a fresh case, same chat trace for exit.
                    turn.draft = d = Draft(message_ids=d.message_ids)
                if not is_new:
                    turn.outputs.append(Reply(self.w.welcome))
            case "help":
                turn.outputs.append(Reply(self.w.help))
            case "media":
                self._media(turn, inbound.media_kind)
                if clean_text(inbound.text):  # a caption: words the reporter chose to send
                    self._text(turn, d, inbound.text)
                    return turn
            case "edited":
                self._edited(turn, d, inbound.text)
            case "text":
                question = (
                    None if urgent or understood is None else self._service_question(understood)
                )
                if question is not None:
                    turn.outputs.append(Reply(question))
                    turn.outputs.append(Reply(self.w.back_to_question))
                else:
                    self._text(turn, d, inbound.text)
                    return turn
            case "button":
                if is_new:
                    pass  # a button from a conversation that was cleared: just start afresh
                else:
                    self._button(turn, d, inbound)
                    return turn
        self._ask_current(turn, d)
        return turn

    def where_we_are(self, draft: Draft) -> Turn:
        """Say again what was last said: after a crash between saving a turn and answering
        it. Someone who raised an alarm is given the numbers again first."""
        turn = Turn(draft=draft)
        if draft.alerted and draft.case_ref:
            turn.outputs.append(Reply(self.w.urgent_repeat.format(ref=draft.case_ref), urgent=True))
        # The saved turn, not a new one: this draft is not saved again, and its buttons must
        # work (they are the very buttons the lost answer had).
        self._ask_current(turn, draft, bump=False)
        return turn

    def attach(self, draft: Draft | None, ref: str | None, replies: Sequence[str]) -> Turn:
        """/followup REF: carry on adding to a report sent earlier (after the chat was
        cleared, or from another phone), and read what the team has replied so far.

        `ref` is None when no open case has that reference. A report still being written is
        never thrown away for it: the reporter is asked to send or leave that one first.
        """
        turn = Turn(draft=draft)
        if ref is None:
            turn.outputs.append(Reply(self.w.followup_not_found))
            return turn
        if draft is not None and draft.step != DONE and (draft.answers or draft.opening):
            turn.outputs.append(Reply(self.w.followup_busy))
            self._ask_current(turn, draft)
            return turn
        d = Draft(step=DONE, case_ref=ref, message_ids=draft.message_ids if draft else [])
        turn.draft = d
        turn.outputs.append(Reply(self.w.followup_attached.format(ref=ref)))
        for text in replies:
            turn.outputs.append(
                Reply(self.w.staff.to_reporter.format(ref=ref, text=html.escape(text)))
            )
        if not replies:
            turn.outputs.append(Reply(self.w.followup_no_replies))
        turn.outputs.append(self._done_prompt(d))
        return turn

    # ----------------------------------------------------------------- urgent
    def _raise_alarm(self, turn: Turn, d: Draft, level: Level, reasons: tuple[str, ...]) -> None:
        if d.case_ref is None:
            d.case_ref = new_reference()
        first_time = level.value not in d.alerted
        if first_time:
            d.alerted.append(level.value)
            if set(reasons) & SELF_HARM_RULES or any(SELF_HARM_INTENT in r for r in reasons):
                template = self.w.urgent_self_harm
            elif level is Level.IMMEDIATE:
                template = self.w.urgent_immediate
            else:
                template = self.w.urgent_high
        else:
            template = self.w.urgent_repeat
        turn.outputs.append(Reply(template.format(ref=d.case_ref), urgent=True))
        turn.events.append(UrgentSignal(d.case_ref, level, reasons))

    # ----------------------------------------------------------------- kinds of input
    def _exit(self, draft: Draft | None) -> Turn:
        ids = tuple(draft.message_ids) if draft else ()
        return Turn(
            draft=None,
            outputs=[ClearChat(ids), Reply(self.w.exit_done)],
            events=[DraftErased()],
        )

    def _media(self, turn: Turn, kind: str) -> None:
        label = self.w.media_kinds.get(kind, self.w.media_kinds["other"])
        if kind in MEDIA_DELETED:
            turn.outputs.insert(0, RemoveInbound())
            turn.outputs.append(Reply(self.w.media_removed.format(kind=label)))
        else:
            turn.outputs.append(Reply(self.w.media_not_kept.format(kind=label)))

    def _edited(self, turn: Turn, d: Draft, text: str) -> None:
        words = clean_text(text)
        if words:
            d.edits.append(words[:MAX_ANSWER_CHARS])
            if d.step == DONE and d.case_ref:
                turn.events.append(FollowUp(d.case_ref, words[:MAX_ANSWER_CHARS]))
            turn.outputs.append(Reply(self.w.edited_noted))

    def _text(self, turn: Turn, d: Draft, text: str) -> None:
        words = clean_text(text)[:MAX_ANSWER_CHARS]
        if d.step == AUDIENCE:
            audience = match_phrase(words, {str(k): v for k, v in self.w.audience_matches.items()})
            if audience is None:
                if words:
                    d.opening.append(words)
                    turn.outputs.append(Reply(self.w.kept_as_typed))
                turn.outputs.append(self._audience_question(d))
                return
            self._choose_audience(d, audience)
        elif d.step == DONE:
            if words and d.case_ref:
                turn.events.append(FollowUp(d.case_ref, words))
                turn.outputs.append(Reply(self.w.followup_added.format(ref=d.case_ref)))
            else:
                turn.outputs.append(Reply(self.w.empty_answer))
            turn.outputs.append(self._done_prompt(d))
            return
        elif d.step in (SUMMARY, CHANGE):
            if words:
                prior = d.answers.get("anything_else")
                joined = f"{prior.text}\n{words}" if prior and prior.text else words
                d.answers["anything_else"] = Answer(text=joined[:MAX_ANSWER_CHARS])
                turn.outputs.append(Reply(self.w.kept_as_typed))
            d.step = SUMMARY
        else:
            self._answer_with_text(turn, d, words)
        self._ask_current(turn, d)

    def _answer_with_text(self, turn: Turn, d: Draft, words: str) -> None:
        step = self.content.step(d.step)
        if not words:
            turn.outputs.append(
                Reply(self.w.empty_required if step.required else self.w.empty_answer)
            )
            return
        if step.kind == "text":
            self._record(turn, d, Answer(text=words))
            return
        option = match_phrase(words, self._option_matches(d.step)) or match_number(
            words, step.number_ranges
        )
        if option is None:
            option = step.unmatched
            turn.outputs.append(Reply(self.w.kept_as_typed))
        self._record(turn, d, Answer(choice=option, text=words))

    def _button(self, turn: Turn, d: Draft, inbound: Inbound) -> None:
        action = inbound.action
        if inbound.turn != d.turn:
            turn.outputs.append(Reply(self.w.stale_button))
            self._ask_current(turn, d)
            return
        if action == "audience" and d.step == AUDIENCE and inbound.value in AUDIENCES:
            self._choose_audience(d, inbound.value)
        elif action == "option" and self._valid_option(d, inbound.step, inbound.value):
            self._record(turn, d, Answer(choice=inbound.value))
        elif action == "skip" and self._is_question(d.step) and not self._required(d.step):
            self._record(turn, d, Answer(skipped=True))
        elif action == "back":
            self._go_back(d)
        elif action == "restart":
            d.restart()
        elif action == "send" and d.step == SUMMARY:
            d.step = DONE
            if d.case_ref is None:
                d.case_ref = new_reference()
            turn.events.append(Submitted(d.case_ref))
            consent = d.answers.get("contact")
            allowed = bool(consent and consent.choice == "yes")
            turn.outputs.append(self._submitted_message(d.case_ref, allowed))
            turn.outputs.append(self._done_prompt(d, bump=False))
            d.turn += 1
            return
        elif action == "change" and d.step == SUMMARY:
            d.step = CHANGE
        elif action == "edit" and d.step == CHANGE and inbound.step in self._flow(d):
            d.step = inbound.step
            d.editing = True
        elif action == "summary" and d.step == CHANGE:
            d.step = SUMMARY
        else:
            turn.outputs.append(Reply(self.w.stale_button))
        self._ask_current(turn, d)

    def _service_question(self, understood: ParseResult) -> str | None:
        """The answer to a question about the service, if that is what the message is."""
        intent = understood.model.intent
        words = len(understood.text.split())
        if intent.confidence < SERVICE_CONFIDENCE or words > SERVICE_MAX_WORDS:
            return None
        return self.w.service_answers.get(intent.name)

    # ----------------------------------------------------------------- moving through a flow
    def _choose_audience(self, d: Draft, audience: str) -> None:
        d.audience = audience
        d.step = self._flow(d)[0]
        d.trail = []
        self._skip_prefilled(d)

    def _prefill(self, d: Draft) -> None:
        """Fill questions still to come from entities the reporter already typed."""
        flow = self._flow(d)
        for entity, value in d.noted:
            step_id = self.content.flows.prefill.get(entity)
            if step_id is None or step_id not in flow or step_id in d.answers:
                continue
            step = self.content.step(step_id)
            if step.kind == "text":
                d.answers[step_id] = Answer(text=value, prefilled=True)
                continue
            option = match_phrase(value, self._option_matches(step_id)) or match_number(
                value, step.number_ranges
            )
            if option is not None and option not in step.urgent_answers:
                d.answers[step_id] = Answer(choice=option, text=value, prefilled=True)

    def _skip_prefilled(self, d: Draft) -> None:
        self._prefill(d)
        flow = self._flow(d)
        while d.step in flow and (answer := d.answers.get(d.step)) and answer.prefilled:
            d.trail.append(d.step)
            index = flow.index(d.step)
            d.step = flow[index + 1] if index + 1 < len(flow) else SUMMARY

    def _record(self, turn: Turn, d: Draft, answer: Answer) -> None:
        step_id = d.step
        step = self.content.step(step_id)
        d.answers[step_id] = answer
        if answer.choice is not None and answer.choice in step.urgent_answers:
            level = Level(step.urgent_answers[answer.choice])
            # Reorder: the signposting must come before anything else we say.
            before = len(turn.outputs)
            self._raise_alarm(turn, d, level, (f"answer:{step_id}={answer.choice}",))
            alarm = turn.outputs.pop(before)
            turn.outputs.insert(0, alarm)
        if step_id == "contact" and answer.choice in ("yes", "no"):
            turn.events.append(ReplyConsent(d.case_ref, answer.choice == "yes"))
        if d.editing:
            d.editing = False
            d.step = SUMMARY
            return
        flow = self._flow(d)
        d.trail.append(step_id)
        index = flow.index(step_id)
        d.step = flow[index + 1] if index + 1 < len(flow) else SUMMARY
        self._skip_prefilled(d)

    def _go_back(self, d: Draft) -> None:
        if d.step == CHANGE:
            d.step = SUMMARY
        elif d.editing:
            d.editing = False
            d.step = SUMMARY
        elif d.trail:
            d.step = d.trail.pop()
        elif d.step != AUDIENCE:
            d.step = AUDIENCE
            d.audience = None

    def _flow(self, d: Draft) -> list[str]:
        return self.content.steps_for(d.audience) if d.audience else []

    def _is_question(self, step_id: str) -> bool:
        return step_id in self.content.all_steps

    def _required(self, step_id: str) -> bool:
        return self.content.step(step_id).required

    def _valid_option(self, d: Draft, step_id: str, value: str) -> bool:
        return (
            step_id == d.step
            and self._is_question(step_id)
            and value in self.content.step(step_id).options
        )

    def _option_matches(self, step_id: str) -> dict[str, list[str]]:
        options = self.w.options.get(step_id, {})
        return {key: [opt.label, *opt.also] for key, opt in options.items()}

    # ----------------------------------------------------------------- what we show
    def _ask_current(self, turn: Turn, d: Draft, bump: bool = True) -> None:
        if bump:  # older buttons stop working
            d.turn += 1
        if d.step == AUDIENCE:
            turn.outputs.append(self._audience_question(d, bump=False))
        elif d.step == SUMMARY:
            turn.outputs.append(self._summary(d))
        elif d.step == CHANGE:
            turn.outputs.append(self._change_menu(d))
        elif d.step == DONE:
            turn.outputs.append(self._done_prompt(d, bump=False))
        else:
            turn.outputs.append(self._question(d))

    def _audience_question(self, d: Draft, bump: bool = True) -> Reply:
        if bump:
            d.turn += 1
        rows = [(Button(self.w.audiences[a], "audience", value=a, turn=d.turn),) for a in AUDIENCES]
        rows.append((self._exit_button(d),))
        return Reply(self.w.choose_audience, tuple(rows))

    def _question(self, d: Draft) -> Reply:
        assert d.audience is not None
        step_id = d.step
        step = self.content.step(step_id)
        rows: list[tuple[Button, ...]] = []
        for option in step.options:
            label = self.w.options[step_id][option].label
            rows.append((Button(label, "option", step_id, option, d.turn),))
        nav = [Button(self.w.buttons.back, "back", turn=d.turn)]
        if not step.required:
            nav.append(Button(self.w.buttons.skip, "skip", turn=d.turn))
        rows.append(tuple(nav))
        rows.append(self._bottom_row(d))
        return Reply(self.w.question(step_id, d.audience), tuple(rows))

    def _summary(self, d: Draft) -> Reply:
        lines = [self.w.summary_header, ""]
        for step_id in self._flow(d):
            label = html.escape(self.w.summary_labels[step_id])
            lines.append(f"<b>{label}:</b> {self._shown_answer(step_id, d.answers.get(step_id))}")
        if d.edits:
            edits = "; ".join(shorten(e, 80) for e in d.edits[-3:])
            lines.append(f"<b>{html.escape(self.w.summary_edits)}:</b> {html.escape(edits)}")
        rows = (
            (Button(self.w.buttons.send, "send", turn=d.turn),),
            (Button(self.w.buttons.change, "change", turn=d.turn),),
            self._bottom_row(d),
        )
        return Reply("\n".join(lines), rows)

    def _shown_answer(self, step_id: str, answer: Answer | None) -> str:
        if answer is None or answer.skipped:
            return html.escape(self.w.summary_skipped)
        if answer.choice is not None:
            # Show what we understood, so a wrong guess is easy to spot and change.
            return html.escape(self.w.options[step_id][answer.choice].label)
        if answer.text:
            text = answer.text
            if len(text) > SUMMARY_ANSWER_CHARS:
                return html.escape(text[:SUMMARY_ANSWER_CHARS]) + html.escape(
                    self.w.summary_shortened
                )
            return html.escape(text)
        return html.escape(self.w.summary_skipped)

    def _change_menu(self, d: Draft) -> Reply:
        rows = [(Button(self.w.summary_labels[s], "edit", s, turn=d.turn),) for s in self._flow(d)]
        rows.append((Button(self.w.buttons.back_to_summary, "summary", turn=d.turn),))
        rows.append((self._exit_button(d),))
        return Reply(self.w.change_pick, tuple(rows))

    def _submitted_message(self, ref: str, reply_allowed: bool) -> Reply:
        reply_line = self.w.reply_line_yes if reply_allowed else self.w.reply_line_no
        return Reply(self.w.submitted.format(ref=ref, reply_line=reply_line))

    def _done_prompt(self, d: Draft, bump: bool = True) -> Reply:
        # After sending, the only button left is the quick exit; anything typed is added.
        if bump:
            d.turn += 1
        return Reply(self.w.done_prompt.format(ref=d.case_ref), ((self._exit_button(d),),))

    def _bottom_row(self, d: Draft) -> tuple[Button, ...]:
        return (Button(self.w.buttons.start_again, "restart", turn=d.turn), self._exit_button(d))

    def _exit_button(self, d: Draft) -> Button:
        return Button(self.w.buttons.exit, "exit", turn=d.turn)


# --------------------------------------------------------------------- text helpers
_INVISIBLE = re.compile(r"[\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")


def clean_text(text: str) -> str:
    """The reporter's words without control or invisible characters, trimmed.

    Keeps newlines; an answer that is only invisible characters becomes empty.
    """
    text = _INVISIBLE.sub("", text)
    text = "".join(
        ch for ch in text if ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Cf", "Cs")
    )
    return text.strip()


def _fold(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold().replace("’", "'")
    return " ".join(re.sub(r"[^\w'&+ ]", " ", text).split())


def match_phrase(text: str, choices: dict[str, list[str]]) -> str | None:
    """Which choice a typed answer means, or None.

    An exact match of a label or a listed phrase wins; otherwise a short answer (up to six
    words) that contains exactly one choice's phrase counts. Longer text is kept as typed rather
    than guessed at.
    """
    folded = _fold(text)
    if not folded:
        return None
    options = {key: [f for f in map(_fold, phrases) if f] for key, phrases in choices.items()}
    for key, phrases in options.items():
        if folded in phrases:
            return key
    if len(folded.split()) > 6:
        return None
    padded = f" {folded} "
    hits = {key for key, phrases in options.items() if any(f" {p} " in padded for p in phrases)}
    return hits.pop() if len(hits) == 1 else None


def match_number(text: str, ranges: dict[str, tuple[int, int]]) -> str | None:
    """The option whose range holds the one number in a short answer ("she's 13" -> 11-13)."""
    numbers = re.findall(r"\d{1,3}", text)
    if not ranges or len(numbers) != 1 or len(text.split()) > 6:
        return None
    value = int(numbers[0])
    return next((key for key, (low, high) in ranges.items() if low <= value <= high), None)


def shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
