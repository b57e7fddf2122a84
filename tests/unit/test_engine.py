"""The dialogue engine without any transport: flows, navigation, urgency, exit."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot.dialogue.content import AUDIENCES, Content
from bot.dialogue.draft import AUDIENCE, CHANGE, DONE, SUMMARY, Draft
from bot.dialogue.engine import (
    Button,
    ClearChat,
    DraftErased,
    Engine,
    FollowUp,
    Inbound,
    RemoveInbound,
    Reply,
    ReplyConsent,
    Submitted,
    Turn,
    UrgentSignal,
    match_phrase,
)
from bot.reports.reference import PATTERN
from nlu.types import Entity, IntentScore, Level, ModelOutput, ParseResult, Urgency

CONTENT_DIR = Path(__file__).resolve().parents[2] / "config"


def understood(
    text: str,
    urgency: Urgency | None = None,
    intent: str = "report_self",
    confidence: float = 0.9,
    entities: tuple[Entity, ...] = (),
) -> ParseResult:
    """What the NLU would say, written by hand so engine tests need no model."""
    top = IntentScore(intent, confidence)
    return ParseResult(
        text, ModelOutput(top, (top,), entities, "test"), urgency or Urgency.nothing()
    )


DANGER = Urgency(Level.IMMEDIATE, 0.97, ("rule:danger_now",))
SELF_HARM = Urgency(Level.IMMEDIATE, 0.97, ("rule:self_harm_now",))


@pytest.fixture(scope="module")
def content() -> Content:
    return Content.load(CONTENT_DIR, "en")


@pytest.fixture
def engine(content: Content) -> Engine:
    return Engine(content)


class Conversation:
    """Drives the engine like a reporter would, keeping the draft between turns."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.draft: Draft | None = None
        self.last: Turn | None = None

    def _go(self, inbound: Inbound, nlu: ParseResult | None = None) -> Turn:
        self.last = self.engine.handle(self.draft, inbound, nlu)
        self.draft = self.last.draft
        return self.last

    def say(self, text: str, urgency: Urgency | None = None, **nlu: object) -> Turn:
        return self._go(Inbound("text", text=text), understood(text, urgency, **nlu))  # type: ignore[arg-type]

    def command(self, name: str) -> Turn:
        return self._go(Inbound(name))  # type: ignore[arg-type]

    def buttons(self) -> list[Button]:
        assert self.last is not None
        replies = [o for o in self.last.outputs if isinstance(o, Reply) and o.buttons]
        assert replies, "the last turn showed no buttons"
        return [b for row in replies[-1].buttons for b in row]

    def press(self, label: str) -> Turn:
        matches = [b for b in self.buttons() if b.label == label]
        assert matches, f"no button {label!r} in {[b.label for b in self.buttons()]}"
        b = matches[0]
        return self._go(Inbound("button", action=b.action, step=b.step, value=b.value, turn=b.turn))

    def texts(self) -> list[str]:
        assert self.last is not None
        return [o.html for o in self.last.outputs if isinstance(o, Reply)]


def skip_to(conv: Conversation, target: str) -> None:
    """Skip optional questions and answer required ones with "no" until `target` is asked."""
    assert conv.draft is not None
    while conv.draft.step != target:
        if conv.engine.content.step(conv.draft.step).required:
            conv.say("no")
        else:
            conv.press("Skip")


def complete(conv: Conversation, audience_label: str) -> Turn:
    """Answer every question of the chosen flow with typed text or the first button."""
    conv.command("start")
    conv.press(audience_label)
    assert conv.draft is not None
    while conv.draft.step not in (SUMMARY,):
        step = conv.engine.content.step(conv.draft.step)
        if conv.draft.step == "danger_now":
            conv.press("No")
        elif conv.draft.step == "contact":
            conv.press("Yes, they can reply")
        elif step.kind == "text":
            conv.say(f"answer for {conv.draft.step}")
        else:
            conv.press(conv.buttons()[0].label)
    return conv.press("✅ Send")


@pytest.mark.parametrize("audience", AUDIENCES)
def test_each_audience_completes_a_report_and_gets_a_reference(
    engine: Engine, content: Content, audience: str
) -> None:
    conv = Conversation(engine)
    turn = complete(conv, content.wording.audiences[audience])  # type: ignore[index]
    submitted = [e for e in turn.events if isinstance(e, Submitted)]
    assert len(submitted) == 1
    assert PATTERN.match(submitted[0].reference)
    assert submitted[0].reference in "\n".join(conv.texts())
    assert conv.draft is not None and conv.draft.step == DONE


def test_first_message_shows_help_numbers_and_anonymity(engine: Engine) -> None:
    conv = Conversation(engine)
    text = "\n".join(conv.command("start") and conv.texts())
    for number in ("999", "0800 1111", "0808 800 5000"):
        assert number in text
    assert "never ask your name" in text
    assert "Telegram" in text  # says plainly what is not anonymous


def test_danger_phrase_signposts_first_and_escalates_keeping_the_report(
    engine: Engine, content: Content
) -> None:
    conv = Conversation(engine)
    conv.command("start")
    conv.press(content.wording.audiences["young_person"])
    turn = conv.say("he is outside my house now", urgency=DANGER)
    assert turn.outputs and isinstance(turn.outputs[0], Reply)
    assert "999" in turn.outputs[0].html
    signals = [e for e in turn.events if isinstance(e, UrgentSignal)]
    assert signals and signals[0].level is Level.IMMEDIATE
    assert conv.draft is not None
    assert conv.draft.answers["what"].text == "he is outside my house now"
    assert conv.draft.step == "who_self"  # carries on with the report


def test_self_harm_signposts_samaritans(engine: Engine) -> None:
    conv = Conversation(engine)
    turn = conv.say("i have taken pills", urgency=SELF_HARM)
    first = turn.outputs[0]
    assert isinstance(first, Reply) and "116 123" in first.html and "999" in first.html


def test_danger_answer_yes_alerts_immediately_and_not_sure_alerts_high(
    engine: Engine, content: Content
) -> None:
    for label, level in (("Yes", Level.IMMEDIATE), ("Not sure", Level.HIGH)):
        conv = Conversation(engine)
        conv.command("start")
        conv.press(content.wording.audiences["worried_adult"])
        assert conv.draft is not None
        skip_to(conv, "danger_now")
        turn = conv.press(label)
        signal = next(e for e in turn.events if isinstance(e, UrgentSignal))
        assert signal.level is level
        first = turn.outputs[0]
        assert isinstance(first, Reply) and "999" in first.html
        assert conv.draft.step == "contact"


def test_typed_words_where_buttons_were_offered_are_kept(engine: Engine, content: Content) -> None:
    conv = Conversation(engine)
    conv.command("start")
    conv.say("im worried about my daughter")  # no audience phrase exactly -> kept as opening
    assert conv.draft is not None
    conv.press(content.wording.audiences["worried_adult"])
    conv.say("she's been going off in cars")
    conv.say("my daughter")  # who_other: matches "My child"
    assert conv.draft.answers["who_other"].choice == "my_child"
    conv.say("she is 13")  # age: a number picks the band
    assert conv.draft.answers["age"].choice == "age_11_13"
    conv.say("kind of on and off since summer")  # when: no match -> kept as typed
    assert conv.draft.answers["when"].choice is None
    assert conv.draft.answers["when"].text == "kind of on and off since summer"


def test_unmatched_words_on_the_danger_question_count_as_not_sure(
    engine: Engine, content: Content
) -> None:
    conv = Conversation(engine)
    conv.command("start")
    conv.press(content.wording.audiences["worried_adult"])
    assert conv.draft is not None
    skip_to(conv, "danger_now")
    turn = conv.say("hard to say really")
    assert conv.draft.answers["danger_now"].choice == "not_sure"
    assert any(isinstance(e, UrgentSignal) and e.level is Level.HIGH for e in turn.events)


def test_skip_back_and_start_again(engine: Engine, content: Content) -> None:
    conv = Conversation(engine)
    conv.command("start")
    conv.press(content.wording.audiences["professional"])
    conv.press("Skip")  # role is optional
    assert conv.draft is not None and conv.draft.step == "what"
    assert "Skip" not in [b.label for b in conv.buttons()]  # "what" is required
    conv.press("⬅️ Back")
    assert conv.draft.step == "role"
    conv.press("⬅️ Back")
    assert conv.draft.step == AUDIENCE
    conv.press(content.wording.audiences["young_person"])
    conv.say("something")
    conv.press("Start again")
    assert conv.draft.step == AUDIENCE and conv.draft.answers == {}


def test_change_an_answer_from_the_summary(engine: Engine, content: Content) -> None:
    conv = Conversation(engine)
    conv.command("start")
    conv.press(content.wording.audiences["young_person"])
    conv.say("first words")
    assert conv.draft is not None
    skip_to(conv, SUMMARY)
    conv.press("✏️ Change an answer")
    assert conv.draft.step == CHANGE
    conv.press(content.wording.summary_labels["what"])
    conv.say("better words")
    assert conv.draft.step == SUMMARY
    assert "better words" in conv.texts()[-1]


def test_summary_escapes_html_and_shortens_long_answers(engine: Engine, content: Content) -> None:
    conv = Conversation(engine)
    conv.command("start")
    conv.press(content.wording.audiences["young_person"])
    conv.say("<b>bold</b> & " + "x" * 5000)
    assert conv.draft is not None
    skip_to(conv, SUMMARY)
    summary = conv.texts()[-1]
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; " in summary
    assert len(summary) < 4096
    assert len(conv.draft.answers["what"].text or "") == 5000 + len("<b>bold</b> & ")


def test_stale_and_forged_buttons_change_nothing(engine: Engine, content: Content) -> None:
    conv = Conversation(engine)
    conv.command("start")
    old = conv.buttons()[0]
    conv.press(content.wording.audiences["young_person"])
    assert conv.draft is not None
    before = conv.draft.to_bytes()
    stale = Inbound("button", action=old.action, value=old.value, turn=old.turn)
    turn = engine.handle(conv.draft, stale, None)
    assert any(
        content.wording.stale_button in t
        for t in [o.html for o in turn.outputs if isinstance(o, Reply)]
    )
    forged = Inbound(
        "button", action="option", step="danger_now", value="yes", turn=conv.draft.turn
    )
    turn = engine.handle(conv.draft, forged, None)
    assert not turn.events
    assert "danger_now" not in conv.draft.answers
    assert conv.draft.step == Draft.from_bytes(before).step


@pytest.mark.parametrize("via", ["command", "button"])
def test_quick_exit_erases_and_clears_tracked_messages(
    engine: Engine, content: Content, via: str
) -> None:
    conv = Conversation(engine)
    conv.command("start")
    conv.press(content.wording.audiences["young_person"])
    assert conv.draft is not None
    conv.draft.track([1, 2, 3])
    turn = conv.command("exit") if via == "command" else conv.press("🚪 Leave now")
    assert turn.draft is None
    assert isinstance(turn.outputs[0], ClearChat) and turn.outputs[0].message_ids == (1, 2, 3)
    assert any(isinstance(e, DraftErased) for e in turn.events)


def test_photo_is_removed_and_reporter_asked_for_words(engine: Engine, content: Content) -> None:
    conv = Conversation(engine)
    conv.command("start")
    turn = conv._go(Inbound("media", media_kind="photo"))
    assert isinstance(turn.outputs[0], RemoveInbound)
    assert any("in words" in t for t in conv.texts())
    turn = conv._go(Inbound("media", media_kind="sticker"))
    assert not any(isinstance(o, RemoveInbound) for o in turn.outputs)


def test_consent_and_follow_up_after_sending(engine: Engine, content: Content) -> None:
    conv = Conversation(engine)
    turn = complete(conv, content.wording.audiences["young_person"])
    ref = next(e for e in turn.events if isinstance(e, Submitted)).reference
    turn = conv.say("one more thing i remembered")
    assert FollowUp(ref, "one more thing i remembered") in turn.events


def test_contact_answer_emits_consent(engine: Engine, content: Content) -> None:
    conv = Conversation(engine)
    conv.command("start")
    conv.press(content.wording.audiences["young_person"])
    assert conv.draft is not None
    skip_to(conv, "contact")
    turn = conv.press("No, don't reply")
    assert any(isinstance(e, ReplyConsent) and not e.allowed for e in turn.events)


def test_draft_round_trips_through_bytes(engine: Engine, content: Content) -> None:
    conv = Conversation(engine)
    conv.command("start")
    conv.press(content.wording.audiences["young_person"])
    conv.say("words with ünïcode and emoji 🙂")
    assert conv.draft is not None
    again = Draft.from_bytes(conv.draft.to_bytes())
    assert again == conv.draft


def test_empty_looking_text_is_asked_again(engine: Engine, content: Content) -> None:
    conv = Conversation(engine)
    conv.command("start")
    conv.press(content.wording.audiences["young_person"])
    conv.say("\u200b \u202e  ")
    assert conv.draft is not None and conv.draft.step == "what"
    assert content.wording.empty_required in conv.texts()


def test_every_reply_fits_telegram_and_every_button_fits_64_bytes(
    engine: Engine, content: Content
) -> None:
    for audience in AUDIENCES:
        conv = Conversation(engine)
        complete(conv, content.wording.audiences[audience])
        for text in conv.texts():
            assert 0 < len(re.sub(r"<[^>]+>", "", text)) <= 4096


def test_match_phrase() -> None:
    choices = {"yes": ["Yes", "yeah", "y"], "no": ["No", "nah"]}
    assert match_phrase("YEAH!!", choices) == "yes"
    assert match_phrase("nah mate", choices) == "no"
    assert match_phrase("yeah no", choices) is None  # ambiguous: kept as typed
    assert match_phrase("", choices) is None


def test_start_after_sending_begins_a_new_report(engine: Engine, content: Content) -> None:
    conv = Conversation(engine)
    turn = complete(conv, content.wording.audiences["young_person"])
    first_ref = next(e for e in turn.events if isinstance(e, Submitted)).reference
    assert conv.draft is not None
    conv.draft.track([10, 11])
    conv.command("start")
    assert conv.draft.step == AUDIENCE and conv.draft.case_ref is None
    assert conv.draft.message_ids[-2:] == [10, 11]  # still cleared by a later quick exit
    turn = complete(conv, content.wording.audiences["worried_adult"])
    assert next(e for e in turn.events if isinstance(e, Submitted)).reference != first_ref


def test_question_about_the_service_is_answered_in_place(engine: Engine, content: Content) -> None:
    conv = Conversation(engine)
    conv.command("start")
    conv.press(content.wording.audiences["young_person"])
    assert conv.draft is not None
    turn = conv.say("will they know its me", intent="ask_anonymous", confidence=0.93)
    assert "what" not in conv.draft.answers and conv.draft.step == "what"
    text = "\n".join(conv.texts())
    assert "never ask your name" in text and "Telegram itself knows" in text
    assert content.wording.question("what", "young_person") in text  # brought back
    assert not turn.events


def test_unsure_service_intent_is_kept_as_an_answer(engine: Engine, content: Content) -> None:
    conv = Conversation(engine)
    conv.command("start")
    conv.press(content.wording.audiences["young_person"])
    conv.say("who reads this stuff anyway", intent="ask_who_reads", confidence=0.4)
    assert conv.draft is not None and conv.draft.answers["what"].text


def test_entities_in_free_text_fill_later_questions(engine: Engine, content: Content) -> None:
    conv = Conversation(engine)
    conv.command("start")
    conv.press(content.wording.audiences["worried_adult"])
    text = "my 13 year old daughter is meeting a man in Dewsbury tonight"
    conv.say(
        text,
        entities=(
            Entity("age", "13", 3, 5),
            Entity("place", "Dewsbury", 41, 49),
            Entity("time", "tonight", 50, 57),
        ),
    )
    assert conv.draft is not None
    assert conv.draft.answers["age"].choice == "age_11_13" and conv.draft.answers["age"].prefilled
    assert conv.draft.answers["where"].text == "Dewsbury"
    assert conv.draft.answers["when"].choice == "now"
    assert conv.draft.step == "who_other"
    conv.press("Skip")  # who_other; age and when were filled, so "where" is next...
    assert conv.draft.step == "involved"  # ...and filled too, so this comes next
    conv.press("⬅️ Back")
    assert conv.draft.step == "where"  # a filled answer can still be visited and changed


def test_self_harm_intent_gets_samaritans(engine: Engine) -> None:
    conv = Conversation(engine)
    urgency = Urgency(Level.IMMEDIATE, 0.9, ("model:embedded:self_harm 0.90",))
    turn = conv.say("ive got the tablets in front of me", urgency, intent="self_harm")
    first = turn.outputs[0]
    assert isinstance(first, Reply) and "116 123" in first.html
