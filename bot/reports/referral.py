"""A case as a referral to children's social care or the police: a JSON document and a PDF.

Pure: no keys, no database, no network, no logging. The caller (``safeguard reports export``)
decrypts the case and the notes and hands them in; this module only arranges them. Every word
of the PDF and every label in the JSON comes from the wording file (``referral:``, plus the level,
audience, status, outcome, reason and event labels of ``staff:``), so a safeguarding lead can
review and translate it.

Inputs
------
``case`` is one case exactly as ``bot.cli.reports._open_reports(settings, ref)`` returns it, with
``records``. Optional extra keys ``outcome``, ``closed_at`` and ``assigned_to`` are used when the
caller adds them; otherwise the outcome and closing time are read from the last ``closed`` event
of the timeline. ``timeline`` is the case's staff events, oldest first or not:
``{"at", "actor", "action", "detail"}``, plus ``"note"`` holding the decrypted text of a note
(or of a reply to the reporter) where there is one, ``None`` where the key could not open it;
``case["timeline"]`` as ``_open_reports`` now builds it is exactly that. A record whose
``content`` is ``None`` (not sealed to this staff key) is listed in ``unreadable_records``.

The JSON document (``build_referral``), format ``safeguard-referral/1``
----------------------------------------------------------------------
Keys are always present; a value that is unknown or was not given is ``null`` or ``[]``, never
left out. Times are the ISO-8601 strings of the store, unchanged. A ``{code, label}`` pair
holds the machine code and its wording label (the code where the wording has none)::

    {
      "format": "safeguard-referral/1",
      "language": "en",                      # language of the labels
      "reference": "K7FQ-3QXM-9PTA",
      "exported_by": str, "exported_at": str,
      "level": {code, label},                # immediate | high | routine | none
      "status": {code, label},               # open | closed
      "outcome": {code, label} | null,       # police | social_care | advice | nfa | ...
      "audience": {code, label} | null,      # young_person (about themselves or a friend),
                                             # worried_adult (someone else), professional
      "dates": {"opened": str, "report_sent": str | null, "closed": str | null},
      "report_sent": bool,                   # false: the reporter never finished the report
      "answers_from": {"kind": "report" | "alert", "recorded_at": str | null} | null,
      "reporter": {"can_reply": bool, "identity": null},   # the service never knows who
      "fields": {                            # all ten keys, always, in this order:
        # what_happened, who_is_at_risk, age, where, when, people_and_vehicles,
        # danger_now, reporter_role, contact, anything_else
        "<field>": {
          "label": str,
          "status": "answered" | "skipped" | "not_given",
          "answers": [answer, ...]           # the questions behind the field that were asked
        }
      },
      "other_answers": [answer, ...],        # answers to questions no field above covers
      "registrations": [str],                # vehicle registrations, upper case, de-duplicated
      "found_in_text": [{"entity", "label", "value"}],  # details the NLU picked out
      "first_messages": [str],               # what they typed before the questions
      "changed_messages": [str],             # new words of messages they edited
      "risk_signals": [{
        "level": {code, label}, "raised_at": str | null,
        "reasons": [{code, label}],          # e.g. "rule:danger_now", "model:embedded:x 0.93"
        "trigger": str | null,               # their words that raised it
        "acknowledged_by": str | null, "acknowledged_at": str | null
      }],
      "followups": [{"at": str, "text": str}],          # added later by the reporter
      "staff_notes": [{"at": str, "by": str, "text": str | null}],  # null: not readable
      "unreadable_records": [{"kind": str, "created_at": str}],  # not sealed to this key
      "timeline": [{                         # staff events, alerts and records, oldest first
        "at": str, "actor": str, "action": str, "label": str,
        "detail": str | null, "text": str | null
      }]
    }

    answer = {
      "step": "age", "question": "Age",
      "status": "answered" | "skipped" | "not_given",
      "value": "14 to 15 (typed: 14)" | null,   # as staff see it (bot.reports.answers)
      "choice": "age_14_15" | null,             # the button's code
      "typed": "14" | null                      # the reporter's own words
    }

The PDF (``referral_pdf``)
--------------------------
A4, DejaVu Sans (shipped with matplotlib) embedded so Polish, Urdu letters and most symbols
print. Characters the font lacks (many emoji) are written visibly as ``[grinning face]``; right-
to-left writing is not shaped, so a note under it points to the JSON for the exact words. The
sensitivity footer and "Page n of m" are on every page; the creation date is ``exported_at``, so
the same referral gives the same bytes.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any, Final

from bot.dialogue.content import Wording
from bot.reports.answers import shown_answer

FORMAT: Final = "safeguard-referral/1"

# The questions (config/flows.yml step ids) behind each field of the referral, in order.
FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "what_happened": ("what",),
    "who_is_at_risk": ("who_self", "who_other"),
    "age": ("age",),
    "where": ("where", "address"),
    "when": ("when", "time_seen"),
    "people_and_vehicles": ("involved", "vehicle", "registration"),
    "danger_now": ("danger_now",),
    "reporter_role": ("role",),
    "contact": ("contact",),
    "anything_else": ("anything_else",),
}
_STEP_FIELD: Final = {step: field for field, steps in FIELDS.items() for step in steps}


# ====================================================================================== JSON
def build_referral(
    case: dict[str, Any],
    timeline: list[dict[str, Any]],
    *,
    wording: Wording,
    exported_by: str,
    exported_at: str,
) -> dict[str, Any]:
    """The referral document for one decrypted case (structure: see the module docstring)."""
    staff, w = wording.staff, wording.referral
    every_record = list(case.get("records") or [])
    # A record this staff key was never given opens as None: listed, never silently left out.
    records = [r for r in every_record if isinstance(r.get("content"), dict)]
    source = _answers_source(records)
    content: dict[str, Any] = source["content"] if source else {}

    answers = [_answer(a, wording) for a in content.get("answers") or []]
    fields: dict[str, Any] = {}
    for field, steps in FIELDS.items():
        mine = [a for a in answers if a["step"] in steps]
        fields[field] = {
            "label": getattr(w.fields, field),
            "status": _field_status(mine),
            "answers": mine,
        }
    other = [a for a in answers if a["step"] not in _STEP_FIELD]

    closed = [e for e in timeline if e.get("action") == "closed"]
    outcome = case.get("outcome") or (closed[-1].get("detail") if closed else None)
    closed_at = case.get("closed_at") or (closed[-1].get("at") if closed else None)
    if case.get("status") != "closed":
        outcome, closed_at = case.get("outcome"), case.get("closed_at")

    signals = _risk_signals(case.get("alerts") or [], records, wording)
    found = [
        {
            "entity": str(f.get("entity")),
            "label": w.entity_labels.get(str(f.get("entity")), str(f.get("entity"))),
            "value": str(f.get("value")),
        }
        for f in content.get("found_in_text") or []
        if isinstance(f, dict)
    ]
    audience = case.get("audience") or content.get("audience")
    return {
        "format": FORMAT,
        "language": str(content.get("language") or "en"),
        "reference": case["reference"],
        "exported_by": exported_by,
        "exported_at": exported_at,
        "level": _coded(case.get("level"), staff.level_labels),
        "status": _coded(case.get("status"), staff.status_labels),
        "outcome": _coded(outcome, staff.outcomes),
        "audience": _coded(audience, staff.audience_labels),
        "dates": {
            "opened": case.get("created_at"),
            "report_sent": case.get("submitted_at"),
            "closed": closed_at,
        },
        "report_sent": bool(case.get("submitted_at")),
        "answers_from": (
            {"kind": source["kind"], "recorded_at": source.get("created_at")} if source else None
        ),
        "reporter": {"can_reply": bool(case.get("can_reply")), "identity": None},
        "fields": fields,
        "other_answers": other,
        "registrations": _registrations(answers, found),
        "found_in_text": found,
        "first_messages": [str(m) for m in content.get("first_messages") or []],
        "changed_messages": [str(m) for m in content.get("changed_messages") or []],
        "risk_signals": signals,
        "followups": [
            {"at": r.get("created_at"), "text": str(r["content"].get("text") or "")}
            for r in _by_time(records, "created_at")
            if r.get("kind") == "followup"
        ],
        "staff_notes": [
            {"at": e.get("at"), "by": e.get("actor"), "text": e.get("note")}
            for e in _by_time(timeline, "at")
            if e.get("action") == "note"
        ],
        "unreadable_records": [
            {"kind": r.get("kind"), "created_at": r.get("created_at")}
            for r in _by_time(every_record, "created_at")
            if not isinstance(r.get("content"), dict)
        ],
        "timeline": _timeline(timeline, every_record, signals, wording),
    }


def _answers_source(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The answers to show: the last report sent, else the last alert's snapshot of them."""
    for kind in ("report", "alert"):
        found = [r for r in records if r.get("kind") == kind and "answers" in r["content"]]
        if found:
            return _by_time(found, "created_at")[-1]
    return None


def _answer(entry: dict[str, Any], wording: Wording) -> dict[str, Any]:
    step = str(entry.get("step") or "")
    question = entry.get("label") or wording.summary_labels.get(step, step)
    choice, typed = entry.get("choice"), entry.get("text")
    if choice is not None or typed is not None:
        status, value = "answered", shown_answer(entry)
    elif entry.get("skipped"):
        status, value = "skipped", None
    else:
        status, value = "not_given", None
    return {
        "step": step,
        "question": str(question),
        "status": status,
        "value": value,
        "choice": None if choice is None else str(choice),
        "typed": None if typed is None else str(typed),
    }


def _field_status(answers: list[dict[str, Any]]) -> str:
    statuses = {a["status"] for a in answers}
    if "answered" in statuses:
        return "answered"
    if "skipped" in statuses:
        return "skipped"
    return "not_given"


def _coded(code: Any, labels: Mapping[str, str]) -> dict[str, str] | None:
    if code is None or code == "":
        return None
    return {"code": str(code), "label": labels.get(str(code), str(code))}


def _registrations(answers: list[dict[str, Any]], found: list[dict[str, str]]) -> list[str]:
    values = [a["typed"] for a in answers if a["step"] == "registration" and a["typed"]]
    values += [f["value"] for f in found if f["entity"] == "registration"]
    seen: dict[str, None] = {}
    for value in values:
        seen.setdefault(" ".join(value.upper().split()), None)
    return [v for v in seen if v]


def readable_reason(reason: str, wording: Wording) -> str:
    """'rule:danger_now' -> 'rule: danger now'; 'model:embedded:self_harm 0.93' ->
    'model: self harm 0.93'; answers use the wording file. (As the staff desk shows them.)"""
    if reason in wording.staff.reasons:
        return wording.staff.reasons[reason]
    kind, _, rest = reason.partition(":")
    if kind == "model":
        rest = rest.partition(":")[2] or rest  # drop the engine name
    return f"{kind}: {rest.replace('_', ' ')}" if rest else reason


def _risk_signals(
    alerts: list[dict[str, Any]], records: list[dict[str, Any]], wording: Wording
) -> list[dict[str, Any]]:
    """Each alert (escalation) with the words that raised it, from its sealed snapshot.

    An alert's snapshot is written in the same transaction as the alert, with the same level
    and reasons: they are paired in time order on those. A snapshot with no alert row (or the
    other way round) is still listed."""
    snapshots = [r for r in _by_time(records, "created_at") if r.get("kind") == "alert"]
    used: set[int] = set()
    signals = []
    for alert in _by_time(alerts, "raised_at"):
        reasons = [str(r) for r in alert.get("reasons") or []]
        trigger = None
        for i, snap in enumerate(snapshots):
            c = snap["content"]
            same = c.get("level") == alert.get("level") and list(c.get("reasons") or []) == reasons
            if i not in used and same:
                used.add(i)
                trigger = c.get("trigger")
                break
        signals.append(_signal(alert, alert.get("raised_at"), reasons, trigger, wording))
    for i, snap in enumerate(snapshots):
        if i not in used:
            c = snap["content"]
            reasons = [str(r) for r in c.get("reasons") or []]
            signals.append(_signal(c, snap.get("created_at"), reasons, c.get("trigger"), wording))
    return _by_time(signals, "raised_at")


def _signal(
    source: Mapping[str, Any], at: Any, reasons: list[str], trigger: Any, wording: Wording
) -> dict[str, Any]:
    return {
        "level": _coded(source.get("level"), wording.staff.level_labels),
        "raised_at": at,
        "reasons": [{"code": r, "label": readable_reason(r, wording)} for r in reasons],
        "trigger": None if trigger is None else str(trigger),
        "acknowledged_by": source.get("acknowledged_by"),
        "acknowledged_at": source.get("acknowledged_at"),
    }


def _timeline(
    events: list[dict[str, Any]],
    records: list[dict[str, Any]],
    signals: list[dict[str, Any]],
    wording: Wording,
) -> list[dict[str, Any]]:
    staff, w = wording.staff, wording.referral
    lines: list[dict[str, Any]] = []
    for e in events:
        action = str(e.get("action") or "")
        detail = e.get("detail")
        if action == "closed" and detail:
            detail = staff.outcomes.get(str(detail), str(detail))
        lines.append(
            {
                "at": e.get("at"),
                "actor": str(e.get("actor") or ""),
                "action": action,
                "label": staff.event_labels.get(action, action),
                "detail": None if detail is None else str(detail),
                "text": e.get("note"),
            }
        )
    for s in signals:
        level = s["level"]["label"] if s["level"] else None
        lines.append(_line(s["raised_at"], w.bot, "alert", level, wording))
    for r in records:
        if r.get("kind") in ("report", "followup"):
            lines.append(_line(r.get("created_at"), w.reporter, str(r["kind"]), None, wording))
    return _by_time(lines, "at")


def _line(at: Any, actor: str, action: str, detail: str | None, wording: Wording) -> dict[str, Any]:
    label = wording.referral.timeline_events.get(action, action)
    return {
        "at": at,
        "actor": actor,
        "action": action,
        "label": label,
        "detail": detail,
        "text": None,
    }


def _moment(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


_NEVER = datetime.max.replace(tzinfo=UTC)


def _by_time(items: Iterable[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """Oldest first; items without a readable time keep their order, at the end."""
    return sorted(items, key=lambda item: _moment(item.get(key)) or _NEVER)


# ======================================================================================= PDF
_FONT_DIR_PARTS: Final = ("fonts", "ttf")
_FAMILY: Final = "dejavu"
_INVISIBLE: Final = frozenset("\u200c\u200d\ufe0e\ufe0f")  # joiners and emoji selectors


@cache
def _font_paths() -> tuple[Path, Path]:
    import matplotlib

    base = Path(matplotlib.get_data_path()).joinpath(*_FONT_DIR_PARTS)
    return base / "DejaVuSans.ttf", base / "DejaVuSans-Bold.ttf"


def referral_pdf(referral: dict[str, Any], *, wording: Wording) -> bytes:
    """The referral (from ``build_referral``) as an A4 PDF."""
    # Drawn twice: the first time to count the pages for "Page n of m" (fpdf2's "{nb}" alias
    # would also replace those characters inside the reporter's words).
    first = _render(referral, wording, pages=None)
    pages = first.pages_count
    _close_fonts(first)
    final = _render(referral, wording, pages=pages)
    try:
        return bytes(final.output())
    finally:
        _close_fonts(final)


def _close_fonts(pdf: Any) -> None:
    for font in pdf.fonts.values():
        close = getattr(font, "close", None)
        if close is not None:
            close()


def _render(referral: dict[str, Any], wording: Wording, pages: int | None) -> Any:
    from fpdf import FPDF

    w = wording.referral

    class _Pdf(FPDF):  # type: ignore[misc]
        def footer(self) -> None:
            self.set_y(-16)
            self.set_font(_FAMILY, "", 7.5)
            self.set_text_color(90)
            self.multi_cell(
                0, 3.6, _safe(self, w.footer, w), align="C", new_x="LMARGIN", new_y="NEXT"
            )
            page = w.page.format(page=self.page_no(), pages=pages or "")
            self.cell(0, 3.6, _safe(self, page, w), align="C")
            self.set_text_color(0)

    pdf = _Pdf(orientation="portrait", unit="mm", format="A4")
    pdf.str_alias_nb_pages = ""  # no "{nb}" replacement inside the reporter's words
    regular, bold = _font_paths()
    pdf.add_font(_FAMILY, "", str(regular))
    pdf.add_font(_FAMILY, "B", str(bold))
    pdf.set_auto_page_break(auto=True, margin=22)
    pdf.set_margins(18, 16, 18)
    moment = _moment(referral.get("exported_at")) or datetime(2000, 1, 1, tzinfo=UTC)
    pdf.set_creation_date(moment)
    pdf.set_title(_ascii(f"{w.title} {referral.get('reference', '')}"))
    pdf.set_producer("safeguard-bot")
    pdf.set_creator("safeguard-bot")
    pdf.add_page()
    _Writer(pdf, wording).document(referral)
    return pdf


def _ascii(text: str) -> str:
    return text.encode("ascii", "replace").decode()


def _safe(pdf: Any, text: str, w: Any, bold: bool = False) -> str:
    """Text the embedded font can draw: what it lacks is named visibly, never dropped."""
    cmap = pdf.fonts[_FAMILY + ("B" if bold else "")].cmap
    out = []
    for ch in text.replace("\r\n", "\n").replace("\r", "\n"):
        if ch == "\n" or (ord(ch) in cmap and unicodedata.category(ch) != "Cc"):
            out.append(ch)
        elif ch == "\t":
            out.append("    ")
        elif ch not in _INVISIBLE:
            name = unicodedata.name(ch, "").lower() or f"U+{ord(ch):04X}"
            out.append(w.missing_char.format(name=name))
    return "".join(out)


def _right_to_left(text: str) -> bool:
    return any(unicodedata.bidirectional(ch) in ("R", "AL") for ch in text)


class _Writer:
    LINE: Final = 5.0

    def __init__(self, pdf: Any, wording: Wording) -> None:
        self.pdf = pdf
        self.wording = wording
        self.w = wording.referral

    # ---------------------------------------------------------------- building blocks
    def text(self, text: str, size: float = 10, bold: bool = False, indent: float = 0) -> None:
        """A paragraph, wrapped (long words too), left-aligned, continued on the next page."""
        self._paragraph(text, size, bold, indent)
        if _right_to_left(text):
            self._paragraph(self.w.right_to_left, 8, False, indent)

    def _paragraph(self, text: str, size: float, bold: bool, indent: float) -> None:
        pdf = self.pdf
        pdf.set_font(_FAMILY, "B" if bold else "", size)
        pdf.set_x(pdf.l_margin + indent)
        height = self.LINE * size / 10
        safe = _safe(pdf, text, self.w, bold)
        pdf.multi_cell(0, height, safe, align="L", new_x="LMARGIN", new_y="NEXT")

    def heading(self, text: str) -> None:
        pdf = self.pdf
        if pdf.get_y() > pdf.h - 50:  # no heading alone at the foot of a page
            pdf.add_page()
        pdf.ln(3)
        self.text(text, size=13, bold=True)
        pdf.set_draw_color(150)
        pdf.line(pdf.l_margin, pdf.get_y(), pdf.w - pdf.r_margin, pdf.get_y())
        pdf.ln(1.5)

    def pair(self, label: str, value: str) -> None:
        self.text(label, size=9, bold=True)
        self.text(value, indent=4)
        self.pdf.ln(1)

    def time(self, value: Any) -> str:
        moment = _moment(value)
        if moment is None:
            return str(value) if value else self.w.not_yet
        return moment.astimezone(UTC).strftime(self.w.time_format)

    def answer_text(self, answer: dict[str, Any]) -> str:
        if answer["status"] == "answered":
            return str(answer["value"])
        return self.w.skipped if answer["status"] == "skipped" else self.w.not_given

    # ------------------------------------------------------------------------ document
    def document(self, r: dict[str, Any]) -> None:
        w = self.w
        self.text(w.title, size=17, bold=True)
        self.text(f"{w.reference}: {r.get('reference', '')}", size=13, bold=True)
        self.text(
            w.exported.format(name=r.get("exported_by", ""), time=self.time(r.get("exported_at"))),
            size=9,
        )
        self.pdf.ln(2)
        self.text(w.intro, size=9)
        self.pdf.ln(2)
        self.facts(r)
        self.answers(r)
        self.signals(r)
        self.listing(w.followups, [(self.time(f["at"]), f["text"]) for f in r.get("followups", [])])
        unreadable = self.wording.staff.record_unreadable
        notes = [
            (w.note_by.format(name=n.get("by") or "", time=self.time(n.get("at"))), n.get("text"))
            for n in r.get("staff_notes", [])
        ]
        self.listing(w.staff_notes, [(head, unreadable if t is None else t) for head, t in notes])
        if r.get("unreadable_records"):
            self.pdf.ln(2)
            for record in r["unreadable_records"]:
                kind = self.wording.staff.record_labels.get(str(record.get("kind")), "")
                self.text(f"{kind} {self.time(record.get('created_at'))}: {unreadable}", size=9)
        self.timeline(r)

    def facts(self, r: dict[str, Any]) -> None:
        w = self.w
        dates = r.get("dates") or {}

        def label(coded: Any) -> str:
            return str(coded["label"]) if coded else w.not_given

        rows = [
            (w.level, label(r.get("level"))),
            (w.status, label(r.get("status"))),
            (w.outcome, label(r.get("outcome")) if r.get("outcome") else w.not_yet),
            (w.reported_by, label(r.get("audience"))),
            (w.opened, self.time(dates.get("opened"))),
            (w.report_sent, self.time(dates.get("report_sent"))),
            (w.closed, self.time(dates.get("closed"))),
            (
                w.can_reply,
                w.can_reply_yes if r.get("reporter", {}).get("can_reply") else w.can_reply_no,
            ),
        ]
        pdf = self.pdf
        for name, value in rows:  # short values: label and value side by side
            shown = _safe(pdf, name, w, bold=True)
            pdf.set_font(_FAMILY, "B", 9)
            top = pdf.get_y()
            label_height = pdf.multi_cell(58, 5, shown, align="L", dry_run=True, output="HEIGHT")
            pdf.multi_cell(58, 5, shown, align="L", new_x="RIGHT", new_y="TOP")
            pdf.set_font(_FAMILY, "", 10)
            pdf.multi_cell(0, 5, _safe(pdf, value, w), align="L", new_x="LMARGIN", new_y="NEXT")
            pdf.set_y(max(pdf.get_y(), top + label_height) + 0.8)

    def answers(self, r: dict[str, Any]) -> None:
        w = self.w
        self.heading(w.answers_title)
        source = r.get("answers_from")
        if source is None:
            self.text(w.no_answers)
        elif source.get("kind") != "report":
            self.text(w.report_not_sent.format(time=self.time(source.get("recorded_at"))), size=9)
            self.pdf.ln(1)
        for field in (r.get("fields") or {}).values():
            answers = field.get("answers") or []
            if not answers:
                self.pair(field["label"], w.not_given)
                continue
            if len(answers) == 1:
                self.pair(field["label"], self.answer_text(answers[0]))
                continue
            self.text(field["label"], size=9, bold=True)
            for a in answers:
                self.text(f"{a['question']}: {self.answer_text(a)}", indent=4)
            self.pdf.ln(1)
        for a in r.get("other_answers") or []:
            self.pair(a["question"], self.answer_text(a))
        if r.get("registrations"):
            self.pair(w.registrations, ", ".join(r["registrations"]))
        if r.get("found_in_text"):
            found = "; ".join(f"{f['label']}: {f['value']}" for f in r["found_in_text"])
            self.pair(w.found_in_text, found)
        for title, key in (
            (w.first_messages, "first_messages"),
            (w.changed_messages, "changed_messages"),
        ):
            if r.get(key):
                self.pair(title, "\n".join(r[key]))

    def signals(self, r: dict[str, Any]) -> None:
        w = self.w
        self.heading(w.risk_signals)
        signals = r.get("risk_signals") or []
        if not signals:
            self.text(w.no_alerts)
        for s in signals:
            level = s["level"]["label"] if s.get("level") else w.not_given
            self.text(
                w.alert_line.format(level=level, time=self.time(s.get("raised_at"))), bold=True
            )
            reasons = ", ".join(x["label"] for x in s.get("reasons") or []) or w.not_given
            self.text(f"{w.why_raised}: {reasons}", indent=4)
            if s.get("trigger"):
                self.text(f"{w.trigger}: {s['trigger']}", indent=4)
            if s.get("acknowledged_at"):
                ack = w.acknowledged.format(
                    name=s.get("acknowledged_by") or "", time=self.time(s["acknowledged_at"])
                )
            else:
                ack = w.not_acknowledged
            self.text(ack, indent=4)
            self.pdf.ln(1.5)

    def listing(self, title: str, items: list[tuple[str, str]]) -> None:
        self.heading(title)
        if not items:
            self.text(self.w.none)
        for head, body in items:
            self.pair(head, body)

    def timeline(self, r: dict[str, Any]) -> None:
        self.heading(self.w.timeline)
        lines = r.get("timeline") or []
        if not lines:
            self.text(self.w.none)
        for line in lines:
            parts = [line.get("actor") or "", line.get("label") or ""]
            head = f"{self.time(line.get('at'))}  {' '.join(p for p in parts if p)}"
            if line.get("detail"):
                head += f": {line['detail']}"
            self.text(head, size=9)
            if line.get("text"):
                self.text(str(line["text"]), size=9, indent=6)
