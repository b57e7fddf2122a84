"""Whatever a reporter (or a forged client) sends, in any order, the engine answers sensibly."""

from __future__ import annotations

import re
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.dialogue.content import Content
from bot.dialogue.draft import Draft
from bot.dialogue.engine import ClearChat, Engine, Inbound, RemoveInbound, Reply
from nlu.types import Entity, IntentScore, Level, ModelOutput, ParseResult, Urgency

CONTENT = Content.load(Path(__file__).resolve().parents[2] / "config", "en")
ENGINE = Engine(CONTENT)
STEPS = [*sorted(CONTENT.all_steps), "@audience", "@summary", "@change", "@done", "nope"]
ACTIONS = [
    "audience",
    "option",
    "skip",
    "back",
    "restart",
    "send",
    "change",
    "edit",
    "summary",
    "exit",
    "bogus",
]
INTENTS = ["report_self", "ask_anonymous", "stop", "ask_human", "self_harm", "greet"]
TAG = re.compile(r"<[^>]+>")

texts = st.text(max_size=4096) | st.sampled_from(
    ["", "\u200b", "\u202e", "yes", "no", "13", "<b>x</b> & y", "x" * 4096]
)
entities = st.lists(
    st.builds(
        Entity,
        st.sampled_from(["age", "time", "place", "registration", "vehicle"]),
        st.text(max_size=20),
        st.just(0),
        st.just(1),
    ),
    max_size=3,
)
levels = st.sampled_from(list(Level))


@st.composite
def events(draw: st.DrawFn) -> tuple[Inbound, ParseResult | None]:
    kind = draw(st.sampled_from(["start", "help", "exit", "text", "button", "media", "edited"]))
    if kind == "button":
        inbound = Inbound(
            "button",
            action=draw(st.sampled_from(ACTIONS)),
            step=draw(st.sampled_from(STEPS)),
            value=draw(st.sampled_from(["yes", "no", "not_sure", "young_person", "me", "x", ""])),
            turn=draw(st.integers(-1, 60)),
        )
    elif kind in ("text", "edited", "media"):
        inbound = Inbound(
            kind,
            text=draw(texts),
            media_kind=draw(st.sampled_from(["photo", "sticker", "poll", ""])),
        )
    else:
        inbound = Inbound(kind)  # type: ignore[arg-type]
    understood = None
    if inbound.text:
        top = IntentScore(draw(st.sampled_from(INTENTS)), draw(st.floats(0, 1)))
        level = draw(levels)
        understood = ParseResult(
            inbound.text,
            ModelOutput(top, (top,), tuple(draw(entities)), "fuzz"),
            Urgency(level, 0.5, ("rule:fuzz",) if level.escalate else ()),
        )
    return inbound, understood


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(events(), min_size=1, max_size=25))
def test_engine_never_breaks_and_every_reply_fits_telegram(
    sequence: list[tuple[Inbound, ParseResult | None]],
) -> None:
    draft: Draft | None = None
    for inbound, understood in sequence:
        turn = ENGINE.handle(draft, inbound, understood)
        for output in turn.outputs:
            assert isinstance(output, Reply | RemoveInbound | ClearChat)
            if isinstance(output, Reply):
                assert TAG.sub("", output.html).strip()
                for row in output.buttons:
                    for button in row:
                        packed = f"r:{button.action}:{button.step}:{button.value}:{button.turn}"
                        assert len(packed.encode()) <= 64
        if understood is not None and understood.urgency.escalate:
            replies = [o for o in turn.outputs if isinstance(o, Reply)]
            assert "999" in replies[0].html  # signposting before anything else is said
        draft = turn.draft
        if draft is not None:
            assert Draft.from_bytes(draft.to_bytes()) == draft  # always storable
