"""How one answer of a sealed report reads for staff, in the CLI and in the staff chat."""

from __future__ import annotations

from typing import Any


def shown_answer(answer: dict[str, Any]) -> str:
    """'14 to 15 (typed: 14)', 'Dewsbury', '(skipped)' from an answer entry of a report."""
    label, text = answer.get("choice_label"), answer.get("text")
    if label and text and str(label).casefold() != str(text).casefold():
        return f"{label} (typed: {text})"
    if label or text:
        return str(label or text)
    return "(skipped)" if answer.get("skipped") else "(not answered yet)"
