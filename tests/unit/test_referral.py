"""The referral export: a decrypted case as a JSON document and an A4 PDF for police or social care.

The PDF is checked by reading its text back: the content streams are decoded through each
embedded font's ToUnicode map, which is what a PDF reader does to copy or search the text.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import zlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.dialogue.content import Content, Wording
from bot.reports.referral import FIELDS, FORMAT, build_referral, referral_pdf
from tests.conftest import ROOT

REF = "K7FQ-3QXM-9PTA"
EXPORTED_AT = "2025-03-02T09:00:00+00:00"
LONG = ("The man in the grey Astra waits outside the school gates every day. " * 60)[:4000]
EMOJI_RTL = "He sent 😀🧿 and wrote: میں خطرے میں ہوں — Zażółć gęślą jaźń"


@pytest.fixture(scope="module")
def wording() -> Wording:
    return Content.load(ROOT / "config", "en").wording


def a_case(what: str = "A man keeps offering girls lifts. canary-what-31") -> dict[str, Any]:
    """A case as `_open_reports` returns it: a worried adult's report, an alert raised on their
    words before they sent it, and a follow-up, with the alert acknowledged."""
    answers = [
        {"step": "what", "label": "What is happening", "text": what},
        {"step": "who_other", "label": "Who", "choice": "child_i_know", "choice_label": "A child"},
        {
            "step": "age",
            "label": "Age",
            "choice": "age_14_15",
            "choice_label": "14 to 15",
            "text": "14",
        },
        {"step": "when", "label": "When", "skipped": True},
        {"step": "where", "label": "Where", "text": "Dewsbury bus station"},
        {"step": "involved", "label": "Others involved", "answered": False},
        {"step": "danger_now", "label": "Danger right now", "choice": "yes", "choice_label": "Yes"},
        {"step": "contact", "label": "Team can reply", "choice": "yes", "choice_label": "Yes"},
        {"step": "anything_else", "label": "Anything else", "skipped": True},
    ]
    report = {
        "reference": REF,
        "kind": "report",
        "recorded_at": "2025-03-01T10:06:00+00:00",
        "language": "en",
        "audience": "worried_adult",
        "answers": answers,
        "first_messages": ["I need to tell someone about a man in a car"],
        "found_in_text": [
            {"entity": "registration", "value": "ab12 cde"},
            {"entity": "place", "value": "Dewsbury"},
        ],
        "changed_messages": ["it was a silver car, not grey"],
        "alerts": True,
    }
    alert = {
        "reference": REF,
        "kind": "alert",
        "recorded_at": "2025-03-01T10:05:00+00:00",
        "language": "en",
        "audience": "worried_adult",
        "answers": answers[:3],
        "level": "immediate",
        "reasons": ["rule:danger_now", "model:embedded:grooming 0.93"],
        "trigger": "he is taking her in his car right now canary-trigger-55",
    }
    followup = {
        "reference": REF,
        "kind": "followup",
        "recorded_at": "2025-03-01T12:00:00+00:00",
        "language": "en",
        "text": "The car was there again today. canary-followup-08",
    }
    return {
        "reference": REF,
        "level": "immediate",
        "status": "closed",
        "audience": "worried_adult",
        "created_at": "2025-03-01T10:00:00.000+00:00",
        "submitted_at": "2025-03-01T10:06:00.000+00:00",
        "can_reply": True,
        "alerts": [
            {
                "level": "immediate",
                "reasons": ["rule:danger_now", "model:embedded:grooming 0.93"],
                "raised_at": "2025-03-01T10:05:00.000+00:00",
                "acknowledged_by": "Asha",
                "acknowledged_at": "2025-03-01T10:07:00.000+00:00",
            }
        ],
        "records": [
            {"kind": "alert", "created_at": "2025-03-01T10:05:00.000+00:00", "content": alert},
            {"kind": "report", "created_at": "2025-03-01T10:06:00.000+00:00", "content": report},
            {
                "kind": "followup",
                "created_at": "2025-03-01T12:00:00.000+00:00",
                "content": followup,
            },
        ],
    }


def a_timeline() -> list[dict[str, Any]]:
    return [
        # Given out of order on purpose: the referral puts it in time order.
        {"at": "2025-03-01T13:00:00.000+00:00", "actor": "Asha", "action": "closed",
         "detail": "police"},
        {"at": "2025-03-01T10:07:00.000+00:00", "actor": "Asha", "action": "acknowledged",
         "detail": None},
        {"at": "2025-03-01T10:07:01.000+00:00", "actor": "Asha", "action": "taken",
         "detail": None},
        {"at": "2025-03-01T10:20:00.000+00:00", "actor": "Asha", "action": "note",
         "detail": None, "note": "Rang the school DSL. canary-note-12"},
    ]  # fmt: skip


def export(case: dict[str, Any], wording: Wording, timeline: Any = None) -> dict[str, Any]:
    return build_referral(
        case,
        a_timeline() if timeline is None else timeline,
        wording=wording,
        exported_by="Asha",
        exported_at=EXPORTED_AT,
    )


def answer(referral: dict[str, Any], field: str, step: str) -> dict[str, Any]:
    (found,) = [a for a in referral["fields"][field]["answers"] if a["step"] == step]
    return found


# ====================================================================================== JSON
def test_referral_json_has_every_field_with_its_value(wording: Wording) -> None:
    # Given a worked case: alert, report, follow-up, taken, noted and closed
    case = a_case()

    # When it is exported
    r = export(case, wording)

    # Then the header says what the case is
    assert r["format"] == FORMAT == "safeguard-referral/1"
    assert r["reference"] == REF
    assert (r["exported_by"], r["exported_at"]) == ("Asha", EXPORTED_AT)
    assert r["level"] == {"code": "immediate", "label": "IMMEDIATE"}
    assert r["status"] == {"code": "closed", "label": "closed"}
    assert r["outcome"] == {"code": "police", "label": "referred to the police"}
    assert r["audience"] == {"code": "worried_adult", "label": "worried adult"}
    assert r["dates"] == {
        "opened": "2025-03-01T10:00:00.000+00:00",
        "report_sent": "2025-03-01T10:06:00.000+00:00",
        "closed": "2025-03-01T13:00:00.000+00:00",
    }
    assert r["report_sent"] is True
    assert r["answers_from"] == {"kind": "report", "recorded_at": "2025-03-01T10:06:00.000+00:00"}
    # and nothing about who the reporter is, only whether they can be replied to
    assert r["reporter"] == {"can_reply": True, "identity": None}

    # And every field of the form is there, in order, labelled
    assert list(r["fields"]) == list(FIELDS)
    assert r["fields"]["what_happened"]["label"] == "What happened"
    assert answer(r, "what_happened", "what")["value"].endswith("canary-what-31")
    assert answer(r, "who_is_at_risk", "who_other")["choice"] == "child_i_know"
    assert answer(r, "age", "age") == {
        "step": "age",
        "question": "Age",
        "status": "answered",
        "value": "14 to 15 (typed: 14)",
        "choice": "age_14_15",
        "typed": "14",
    }
    assert answer(r, "where", "where")["value"] == "Dewsbury bus station"
    assert answer(r, "danger_now", "danger_now")["value"] == "Yes"
    assert r["fields"]["contact"]["status"] == "answered"
    assert r["registrations"] == ["AB12 CDE"]
    assert {"entity": "place", "label": "place", "value": "Dewsbury"} in r["found_in_text"]
    assert r["first_messages"] == ["I need to tell someone about a man in a car"]
    assert r["changed_messages"] == ["it was a silver car, not grey"]

    # And the alert carries its reasons, readable, and the words that raised it
    (signal,) = r["risk_signals"]
    assert signal["level"]["code"] == "immediate"
    assert signal["trigger"] == "he is taking her in his car right now canary-trigger-55"
    assert signal["reasons"] == [
        {"code": "rule:danger_now", "label": "rule: danger now"},
        {"code": "model:embedded:grooming 0.93", "label": "model: grooming 0.93"},
    ]
    assert (signal["acknowledged_by"], signal["acknowledged_at"]) == (
        "Asha",
        "2025-03-01T10:07:00.000+00:00",
    )

    # And the follow-up, the note and the whole timeline, oldest first
    assert r["followups"] == [
        {
            "at": "2025-03-01T12:00:00.000+00:00",
            "text": "The car was there again today. canary-followup-08",
        }
    ]
    assert r["staff_notes"] == [
        {
            "at": "2025-03-01T10:20:00.000+00:00",
            "by": "Asha",
            "text": "Rang the school DSL. canary-note-12",
        }
    ]
    assert [(t["actor"], t["action"]) for t in r["timeline"]] == [
        ("the bot", "alert"),
        ("the reporter", "report"),
        ("Asha", "acknowledged"),
        ("Asha", "taken"),
        ("Asha", "note"),
        ("the reporter", "followup"),
        ("Asha", "closed"),
    ]
    closed = r["timeline"][-1]
    assert (closed["label"], closed["detail"]) == ("closed the case", "referred to the police")
    assert r["timeline"][4]["text"] == "Rang the school DSL. canary-note-12"

    assert r["unreadable_records"] == []

    # And it is plain JSON
    assert json.loads(json.dumps(r, ensure_ascii=False)) == r


def test_missing_and_skipped_answers_are_explicit(wording: Wording) -> None:
    # Given a report with a skipped question, one never answered, and questions not asked
    r = export(a_case(), wording)

    # Then a skipped answer stays marked as skipped, with no value
    when = answer(r, "when", "when")
    assert (when["status"], when["value"], when["choice"], when["typed"]) == (
        "skipped",
        None,
        None,
        None,
    )
    assert r["fields"]["when"]["status"] == "skipped"
    # and an unanswered one is "not given", not dropped
    involved = answer(r, "people_and_vehicles", "involved")
    assert (involved["status"], involved["value"]) == ("not_given", None)
    assert r["fields"]["people_and_vehicles"]["status"] == "not_given"
    # and a field whose questions this audience was never asked is there, empty, not given
    assert r["fields"]["reporter_role"] == {
        "label": "Reporter's work",
        "status": "not_given",
        "answers": [],
    }
    # and an open case has no outcome or closing time, as null
    case = a_case()
    case["status"] = "open"
    opened = export(case, wording, timeline=[])
    assert opened["outcome"] is None and opened["dates"]["closed"] is None
    assert opened["staff_notes"] == [] and opened["timeline"][0]["action"] == "alert"


def test_a_report_never_sent_uses_the_alert_snapshot(wording: Wording) -> None:
    # Given a case where the reporter raised an alert and then left before sending
    case = a_case()
    case["submitted_at"] = None
    case["records"] = [r for r in case["records"] if r["kind"] == "alert"]

    # When it is exported
    r = export(case, wording, timeline=[])

    # Then the answers come from the alert and say so; later questions are simply not given
    assert r["report_sent"] is False
    assert r["answers_from"]["kind"] == "alert"
    assert answer(r, "age", "age")["status"] == "answered"
    assert r["fields"]["where"] == {"label": "Where", "status": "not_given", "answers": []}
    assert r["followups"] == [] and r["first_messages"] == []


def test_an_unknown_question_is_kept_in_other_answers(wording: Wording) -> None:
    # Given a report with a question no referral field covers (the flows changed later)
    case = a_case()
    case["records"][1]["content"]["answers"].append(
        {"step": "school_name", "label": "School", "text": "canary-school-4"}
    )

    # Then it is not dropped
    (other,) = export(case, wording)["other_answers"]
    assert (other["step"], other["value"]) == ("school_name", "canary-school-4")


def test_long_emoji_and_right_to_left_text_survive_into_json(wording: Wording) -> None:
    # Given a 4,000-character answer and a follow-up in emoji, Urdu and Polish
    case = a_case(what=LONG)
    case["records"][2]["content"]["text"] = EMOJI_RTL

    # When exported and written out as JSON
    r = json.loads(json.dumps(export(case, wording), ensure_ascii=False))

    # Then both are there to the character
    assert len(LONG) == 4000
    assert answer(r, "what_happened", "what")["typed"] == LONG
    assert answer(r, "what_happened", "what")["value"] == LONG
    assert r["followups"][0]["text"] == EMOJI_RTL


def test_records_and_notes_this_key_cannot_open_are_listed_not_dropped(wording: Wording) -> None:
    # Given a follow-up and a note sealed before this member of staff joined (opened as None)
    case = a_case()
    case["records"][2]["content"] = None
    timeline = a_timeline()
    timeline[3]["note"] = None

    # When exported and printed
    r = export(case, wording, timeline)
    text = "\n".join(pdf_text(referral_pdf(r, wording=wording)))

    # Then the JSON says which could not be read, and the timeline still has them
    assert r["unreadable_records"] == [
        {"kind": "followup", "created_at": "2025-03-01T12:00:00.000+00:00"}
    ]
    assert r["followups"] == []
    assert r["staff_notes"][0]["text"] is None
    assert ("the reporter", "followup") in [(t["actor"], t["action"]) for t in r["timeline"]]
    # and so does the PDF
    assert text.count("(a record could not be opened with this key)") == 2


def test_build_referral_does_not_change_its_inputs(wording: Wording) -> None:
    case, timeline = a_case(), a_timeline()
    before = copy.deepcopy((case, timeline))
    export(case, wording, timeline)
    assert (case, timeline) == before


# ======================================================================================= PDF
def pdf_text(pdf: bytes) -> list[str]:
    """The text of each page, as a reader would copy it (one line per text object)."""
    objects = {int(m[1]): m[2] for m in re.finditer(rb"(\d+) 0 obj\s(.*?)endobj", pdf, re.DOTALL)}

    def stream(num: int) -> bytes:
        body = objects[num]
        raw = re.search(rb"stream\r?\n(.*?)\r?\nendstream", body, re.DOTALL)
        assert raw is not None
        return zlib.decompress(raw[1]) if b"/FlateDecode" in body else raw[1]

    def to_unicode(font: int) -> dict[int, str]:
        ref = re.search(rb"/ToUnicode (\d+) 0 R", objects[font])
        assert ref is not None
        cmap = stream(int(ref[1]))
        mapping = {}
        for block in re.findall(rb"beginbfchar(.*?)endbfchar", cmap, re.DOTALL):
            for gid, uni in re.findall(rb"<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>", block):
                mapping[int(gid, 16)] = bytes.fromhex(uni.decode()).decode("utf-16-be")
        for block in re.findall(rb"beginbfrange(.*?)endbfrange", cmap, re.DOTALL):
            for lo, hi, uni in re.findall(
                rb"<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>", block
            ):
                start = int(uni, 16)
                for i, gid in enumerate(range(int(lo, 16), int(hi, 16) + 1)):
                    mapping[gid] = chr(start + i)
        return mapping

    pages = []
    for num in sorted(n for n, body in objects.items() if b"/Type /Page\n" in body):
        page = objects[num]
        resources = re.search(rb"/Resources (\d+) 0 R", page)
        contents = re.search(rb"/Contents (\d+) 0 R", page)
        assert resources is not None and contents is not None
        fonts = {
            name.decode(): to_unicode(int(ref))
            for name, ref in re.findall(rb"/(F\d+) (\d+) 0 R", objects[int(resources[1])])
        }
        lines, font = [], {}
        for op in re.finditer(
            rb"/(F\d+) [\d.]+ Tf|BT|\((?:\\.|[^\\)])*\)", stream(int(contents[1]))
        ):
            token = op[0]
            if token == b"BT":
                lines.append("")
            elif token.startswith(b"/"):
                font = fonts[op[1].decode()]
            else:
                raw = _unescape(token[1:-1])
                ids = [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]
                lines[-1] += "".join(font.get(i, "\ufffd") for i in ids)
        pages.append("\n".join(line for line in lines if line))
    return pages


def _unescape(literal: bytes) -> bytes:
    escapes = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"f": b"\f"}

    def one(m: re.Match[bytes]) -> bytes:
        code = m[1]
        if code[:1].isdigit():
            return bytes([int(code, 8)])
        return escapes.get(code, code)

    return re.sub(rb"\\([0-7]{1,3}|.)", one, literal, flags=re.DOTALL)


def test_pdf_is_a_readable_referral(wording: Wording) -> None:
    # Given an exported case
    referral = export(a_case(), wording)

    # When it is printed
    pdf = referral_pdf(referral, wording=wording)

    # Then it is an A4 PDF
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
    assert b"/MediaBox [0 0 595.28 841.89]" in pdf
    # whose text holds the reference, the headings and the reporter's words
    text = "\n".join(pdf_text(pdf))
    assert f"Reference: {REF}" in text
    for heading in ("Safeguarding referral", "What happened", "Who is at risk", "Risk signals",
                    "Why the bot raised it", "Timeline", "Staff notes"):  # fmt: skip
        assert heading in text, heading
    for canary in ("canary-what-31", "canary-trigger-55", "canary-followup-08", "canary-note-12"):
        assert canary in text, canary
    assert "14 to 15 (typed: 14)" in text
    assert "skipped by the reporter" in text and "not given" in text
    assert "rule: danger now" in text and "referred to the police" in text
    assert "AB12 CDE" in text
    # and every page has the sensitivity footer and its number
    pages = pdf_text(pdf)
    for n, page in enumerate(pages, start=1):
        assert "OFFICIAL-SENSITIVE" in page
        assert f"Page {n} of {len(pages)}" in page


def test_pdf_runs_long_text_onto_more_pages(wording: Wording) -> None:
    # Given a 4,000-character answer, a 4,000-character word and a long follow-up
    case = a_case(what=LONG)
    case["records"][1]["content"]["answers"][4]["text"] = "x" * 4000
    case["records"][2]["content"]["text"] = LONG

    # When it is printed
    pages = pdf_text(referral_pdf(export(case, wording), wording=wording))

    # Then it runs over several pages and nothing is lost: the end of the long answer is there
    assert len(pages) >= 3
    assert pages[-1].count("OFFICIAL-SENSITIVE") == 1
    body = [line for p in pages for line in p.splitlines() if "OFFICIAL" not in line]
    joined = "".join("".join(line.split()) for line in body if not line.startswith("Page "))
    assert "x" * 4000 in joined
    assert "".join(LONG.split())[-200:] in joined


def test_pdf_shows_unicode_and_names_what_the_font_lacks(
    wording: Wording, caplog: pytest.LogCaptureFixture
) -> None:
    # Given words in Polish and Urdu, and an emoji the embedded font has no glyph for
    case = a_case(what=EMOJI_RTL)

    # When it is printed
    with caplog.at_level(logging.DEBUG):
        text = "\n".join(pdf_text(referral_pdf(export(case, wording), wording=wording)))

    # Then none of their words reach a log (fpdf2 would log the characters a font lacks)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert not any(ch in logged for ch in "😀🧿ż")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]

    # Then Polish prints as typed; the missing emoji is named, not silently dropped
    assert "Zażółć gęślą jaźń" in text
    assert "[nazar amulet]" in text
    # and Urdu letters are there, with a pointer to the exact words in the JSON
    assert "خطر" in text
    assert "Right-to-left writing may not show correctly" in text


def test_pdf_is_the_same_for_the_same_referral(wording: Wording) -> None:
    # Given one referral, printed twice
    referral = export(a_case(), wording)

    # Then the bytes are the same, dated by the export
    first = referral_pdf(referral, wording=wording)
    assert first == referral_pdf(referral, wording=wording)
    assert b"D:20250302090000" in first


@settings(
    max_examples=8,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.text(max_size=300), st.text(max_size=60))
def test_pdf_never_fails_on_any_text(what: str, note: str) -> None:
    # Given any text at all in an answer, a follow-up and a note
    wording = Content.load(ROOT / "config", "en").wording
    case = a_case(what=what)
    case["records"][2]["content"]["text"] = note
    timeline = [*a_timeline(), {"at": "x", "actor": note, "action": note, "detail": note}]

    # When it is exported and printed
    referral = export(case, wording, timeline)
    pdf = referral_pdf(referral, wording=wording)

    # Then the JSON keeps the text exactly and the PDF is whole
    assert answer(referral, "what_happened", "what")["typed"] == what
    assert json.loads(json.dumps(referral))["followups"][0]["text"] == note
    assert pdf.startswith(b"%PDF-") and REF in "\n".join(pdf_text(pdf))
